"""A clear message, instead of an import traceback, when a program's extra is not installed."""

import importlib.util
import sys
from collections.abc import Sequence


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The modules of the list that cannot be imported."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require_extra(program: str, extra: str, modules: Sequence[str]) -> None:
    """Exit with status 2 and an install hint if any of the modules is missing."""
    missing = missing_modules(modules)
    if missing:
        print(
            f"{program}: needs {', '.join(missing)}; install it with"
            f" pip install 'plantwire[{extra}]'",
            file=sys.stderr,
        )
        raise SystemExit(2)
