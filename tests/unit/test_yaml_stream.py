"""The event-built YAML loader gives what yaml.safe_load gives."""

import pytest
import yaml

from shared.yaml_stream import load_yaml

DOCUMENTS = [
    "a: 1",
    "x: [1, 2.5, true, null, 's', 2026-01-01, 0x10, 1_000, .inf, yes, ~]",
    "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3",
    "one: &o {a: 1}\ntwo: &t {b: 2}\nboth:\n  <<: [*o, *t]\n  c: 3",
    "- &a [1, 2]\n- *a\n- &s scalar\n- *s",
    "",
    "nested:\n  - {name: t, tags: [{a: 1}, {b: [x, y]}]}\n  - plain\n",
    "text: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
    "quoted: '123'\nnumber: 123\nstr_tag: !!str 5\n",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_same_result_as_safe_load(text: str) -> None:
    assert load_yaml(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: *nowhere",
        "a: [1, 2",
        "--- 1\n--- 2\n",
        "a: !!python/object:os.system x",
        "m:\n  <<: 5\n",
    ],
)
def test_errors_are_yaml_errors(text: str) -> None:
    with pytest.raises(yaml.YAMLError):
        load_yaml(text)
