"""Loading a program's YAML configuration into strict pydantic models, with env overrides."""

import contextlib
import gc
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, ValidationError

from shared.errors import ConfigError
from shared.yaml_stream import load_yaml

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _bare_number(number: str) -> float:
    # A bare 0 is 0 in every unit; any other bare number is ambiguous (other gateways read
    # milliseconds where Plantwire once read seconds), so it must say which it means.
    if float(number) == 0:
        return 0.0
    raise ValueError(f"{number} has no unit: write {number}ms or {number}s")


def parse_duration(raw: object) -> object:
    """Turn "250ms", "5s", "2m", "1h", "7d" (or a bare 0) into seconds; refuse a bare number."""
    if isinstance(raw, bool):
        return raw  # let pydantic reject it with its own message
    if isinstance(raw, int | float):
        return _bare_number(f"{raw:g}")
    if isinstance(raw, str):
        match = _DURATION.match(raw)
        if match is None:
            raise ValueError(f"expected a duration such as '500ms', '5s', '2m', got {raw!r}")
        number, unit = match.groups()
        return _bare_number(number) if unit is None else float(number) * _UNIT_SECONDS[unit]
    return raw


def format_duration(seconds: float) -> str:
    """A duration as a config file writes it, so a dumped config reads back: "5s", "0.25s"."""
    text = format(Decimal(repr(float(seconds))), "f")  # exact, and never in exponent form
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}s"


Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
"""A duration in seconds, written in YAML with its unit: "500ms", "5s", "2m", "1h", "7d" (or 0)."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level_upper(raw: object) -> object:
    if isinstance(raw, str) and raw.upper() in LOG_LEVELS:
        return raw.upper()
    return raw  # anything else fails the Literal below, which lists the allowed levels


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_log_level_upper)
]
"""A logging level, in any case: DEBUG, INFO, WARNING or ERROR."""


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_MAX_LISTED = 10  # a range configured twice repeats every one of its names


def require_unique(names: Iterable[str], what: str) -> None:
    """Raise ValueError listing the names that occur more than once."""
    seen: set[str] = set()
    repeated: set[str] = set()
    for name in names:
        (repeated if name in seen else seen).add(name)
    if repeated:
        shown = sorted(repeated)[:_MAX_LISTED]
        more = f" and {len(repeated) - len(shown)} more" if len(repeated) > len(shown) else ""
        raise ValueError(f"{what} must be unique; repeated: {', '.join(shown)}{more}")


ModelT = TypeVar("ModelT", bound=BaseModel)


def _set_path(document: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    node = document
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _describe(error: Mapping[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = str(error["msg"])
    if error["type"] == "missing":
        return f"{location}: required key is missing"
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown key"
    message = message.removeprefix("Value error, ")
    given = error.get("input")
    if isinstance(given, Mapping | list):
        return f"{location}: {message}"  # a whole section or list says nothing the key does not
    return f"{location}: {message} (got {given!r})"


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while a configuration is built.

    A plant-sized file makes hundreds of thousands of objects that live as long as the
    program, and the collector's passes over them took a third of check-config's time at
    100,000 tags. They hold no reference cycles worth collecting on the way.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_config(
    path: Path,
    model: type[ModelT],
    env_overrides: Mapping[str, tuple[str, ...]],
    environ: Mapping[str, str] | None = None,
) -> ModelT:
    """Read a YAML file, apply environment overrides and validate; raise ConfigError naming keys."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from exc
    try:
        with _collector_paused():
            document = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    for variable, key_path in env_overrides.items():
        if variable in environ:
            _set_path(document, key_path, environ[variable])
    try:
        with _collector_paused():
            return model.model_validate(document)
    except ValidationError as exc:
        lines = [_describe(error) for error in exc.errors()]
        raise ConfigError(f"{path}: invalid configuration\n  " + "\n  ".join(lines)) from exc
