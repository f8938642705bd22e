"""Documentation that is generated or embedded stays in step with the code."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current() -> None:
    script = ROOT / "scripts" / "config_docs.py"
    spec = importlib.util.spec_from_file_location("config_docs", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = (ROOT / "docs" / "configuration.md").read_text()
    assert module.render() == current, "run: python scripts/config_docs.py"


@pytest.mark.parametrize("protocol", ["modbus", "opcua"])
def test_protocol_readme_embeds_its_sample(protocol: str) -> None:
    folder = ROOT / "protocols" / protocol
    assert (folder / "sample.yaml").read_text() in (folder / "README.md").read_text()
