"""Rendering config models as Markdown, so docs/configuration.md reuses field descriptions."""

import types
from enum import Enum
from typing import Annotated, Any, Literal, TypeGuard, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shared.config import parse_duration


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(repr(arg).replace("'", '"') for arg in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(annotation))
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f'"{member.value}"' for member in annotation)
    if annotation is type(None):
        return "null"
    if annotation is float:
        return "number"
    if getattr(annotation, "__name__", "") == "SecretStr":
        return "string (secret)"
    if getattr(annotation, "__name__", "") == "Path":
        return "path"
    if annotation is int:
        return "integer"
    if annotation is bool:
        return "boolean"
    if annotation is str:
        return "string"
    return getattr(annotation, "__name__", str(annotation))


def _is_duration(field: FieldInfo) -> bool:
    return any(getattr(item, "func", None) is parse_duration for item in field.metadata)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is list:
        return "`[]`"
    if field.default_factory is not None:
        return "(section defaults)"
    if field.default is PydanticUndefined or field.default is None:
        return ""
    value = field.default.value if isinstance(field.default, Enum) else field.default
    if _is_duration(field):
        return f"`{value:g}s`"
    return f"`{value}`"


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _nested_models(annotation: Any) -> tuple[list[type[BaseModel]], bool]:
    """Models a field holds (its own table each), and whether they come as a list."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _nested_models(get_args(annotation)[0])
    if _is_model(annotation):
        return [annotation], False
    if origin is list:
        return _nested_models(get_args(annotation)[0])[0], True
    found: list[type[BaseModel]] = []
    as_list = False
    for arg in get_args(annotation):
        models, in_list = _nested_models(arg)
        found.extend(models)
        as_list = as_list or in_list
    return found, as_list


def _variant(model: type[BaseModel]) -> str:
    """`type=<value>` for one member of a union told apart by its `type` key."""
    type_field = model.model_fields.get("type")
    if type_field is None or get_origin(type_field.annotation) is not Literal:
        return model.__name__
    return f"type={get_args(type_field.annotation)[0]}"


def _kind(annotation: Any, models: list[type[BaseModel]], as_list: bool) -> str:
    if not models:
        return _type_name(annotation)
    optional = type(None) in get_args(annotation)
    kind = "list of sections" if as_list else "section"
    return f"{kind} or null" if optional else kind


def model_table(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Markdown sections describing a model's keys, nested sections after their parent.

    Headings name the key path as it is written in the file: `security` for a section,
    `tags[]` for the entries of a list, `devices[type=opcua]` for the entries of a list whose
    kind is chosen by their `type` key.
    """
    lines = [
        f"### `{prefix or '(top level)'}`",
        "",
        (model.__doc__ or "").strip(),
        "",
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        annotation = field.annotation
        models, as_list = _nested_models(annotation)
        kind = "duration" if _is_duration(field) else _kind(annotation, models, as_list)
        if len(models) > 1:
            nested.extend((f"{path}[{_variant(inner)}]", inner) for inner in models)
        else:
            nested.extend((f"{path}[]" if as_list else path, inner) for inner in models)
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {kind} | {_default(field)} | {description} |")
    lines.append("")
    for path, inner in nested:
        lines.extend(model_table(inner, path))
    return lines
