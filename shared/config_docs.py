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


def _element_models(annotation: Any) -> list[type[BaseModel]]:
    """Models inside list[...] / unions, whose fields get tables of their own."""
    if get_origin(annotation) is Annotated:
        return _element_models(get_args(annotation)[0])
    if _is_model(annotation):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_element_models(arg))
    return found


def model_table(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Markdown sections describing a model's keys, nested sections after their parent."""
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
        if _is_model(annotation):
            nested.append((path, annotation))
            kind = "section"
        elif _is_duration(field):
            kind = "duration"
        else:
            kind = _type_name(annotation)
            nested.extend((f"{path}[]", inner) for inner in _element_models(annotation))
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {kind} | {_default(field)} | {description} |")
    lines.append("")
    for path, inner in nested:
        type_field = inner.model_fields.get("type")
        if type_field is not None and get_origin(type_field.annotation) is Literal:
            path = f"{path[:-2]}[type={get_args(type_field.annotation)[0]}]"
        lines.extend(model_table(inner, path))
    return lines
