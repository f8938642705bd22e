"""A YAML loader that builds Python objects straight from parser events.

yaml.safe_load first composes a node graph with two position marks per scalar; for a device
with 10,000 tags that graph took 40 MB that the process never gave back. Building from events
keeps one event alive at a time and gives the same result as safe_load (anchors, aliases and
merge keys included).
"""

from typing import Any

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"
_NO_KEY = object()


class _Frame:
    __slots__ = ("anchor", "container", "key", "merges")

    def __init__(self, container: dict[Any, Any] | list[Any], anchor: str | None) -> None:
        self.container = container
        self.anchor = anchor
        self.key: Any = _NO_KEY
        self.merges: list[dict[Any, Any]] = []


def load_yaml(text: str) -> Any:
    """Parse one YAML document like yaml.safe_load, using far less memory on large ones."""
    loader = _Loader(text)
    try:
        return _build(loader)
    finally:
        loader.dispose()


def _scalar(loader: Any, event: yaml.ScalarEvent) -> tuple[Any, bool]:
    """The constructed value, and whether it is a merge key."""
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    if tag == _MERGE:
        return "<<", True
    start: Any = event.start_mark  # the C parser's marks are another class than the stubs say
    end: Any = event.end_mark
    node = yaml.ScalarNode(tag, event.value, start, end, event.style)
    constructor = loader.yaml_constructors.get(tag)
    if constructor is None:
        raise yaml.constructor.ConstructorError(
            None, None, f"could not determine a constructor for the tag {tag!r}", start
        )
    return constructor(loader, node), False


def _build(loader: Any) -> Any:
    stack: list[_Frame] = []
    anchors: dict[str, Any] = {}
    root: Any = None
    merge_pending = False

    def place(value: Any, is_merge_key: bool = False) -> None:
        nonlocal root, merge_pending
        if not stack:
            root = value
            return
        frame = stack[-1]
        if isinstance(frame.container, list):
            frame.container.append(value)
        elif frame.key is _NO_KEY:
            frame.key = value
            merge_pending = is_merge_key
        else:
            if merge_pending:
                sources = value if isinstance(value, list) else [value]
                if not all(isinstance(source, dict) for source in sources):
                    raise yaml.constructor.ConstructorError(
                        None, None, "a merge key needs a mapping or a list of mappings", None
                    )
                frame.merges.extend(sources)
                merge_pending = False
            else:
                frame.container[frame.key] = value
            frame.key = _NO_KEY

    while loader.check_event():
        event = loader.get_event()
        mark: Any = event.start_mark
        if isinstance(event, yaml.ScalarEvent):
            value, is_merge = _scalar(loader, event)
            if event.anchor:
                anchors[event.anchor] = value
            place(value, is_merge)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            container: dict[Any, Any] | list[Any] = (
                {} if isinstance(event, yaml.MappingStartEvent) else []
            )
            if event.anchor:
                anchors[event.anchor] = container
            stack.append(_Frame(container, event.anchor))
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            frame = stack.pop()
            if frame.merges and isinstance(frame.container, dict):
                for source in reversed(frame.merges):
                    for key, value in source.items():
                        frame.container.setdefault(key, value)
            place(frame.container)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise yaml.composer.ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", mark
                )
            place(anchors[event.anchor])
        elif isinstance(event, yaml.DocumentStartEvent) and root is not None:
            raise yaml.composer.ComposerError(
                "expected a single document in the stream",
                None,
                "but found another document",
                mark,
            )
    return root
