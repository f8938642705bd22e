"""Documentation that is generated or embedded stays in step with the code."""

import importlib.util
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field

from shared.config import StrictModel
from shared.config_docs import model_table

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


class _Line(StrictModel):
    """A serial line."""

    port: str = Field(description="Device file.")


class _User(StrictModel):
    """A user, of one of several kinds."""

    type: Literal["anonymous", "username"] = Field(default="anonymous", description="Kind.")


class _Pump(StrictModel):
    """A pump."""

    type: Literal["pump"] = Field(description="Selects pumps.")
    serial: _Line | None = Field(default=None, description="Its line.")
    user: _User = Field(default_factory=_User, description="Who it runs as.")
    tags: list[_Line] = Field(description="Its tags.")


class _Fan(StrictModel):
    """A fan."""

    type: Literal["fan"] = Field(description="Selects fans.")


class _Plant(StrictModel):
    """A plant."""

    devices: list[Annotated[_Pump | _Fan, Field(discriminator="type")]] = Field(
        description="Its devices."
    )


def test_nested_sections_are_headed_by_the_key_path_written_in_the_file() -> None:
    lines = model_table(_Plant)
    headings = [line.removeprefix("### ") for line in lines if line.startswith("### ")]
    assert headings == [
        "`(top level)`",
        "`devices[type=pump]`",
        "`devices[type=pump].serial`",
        "`devices[type=pump].user`",
        "`devices[type=pump].tags[]`",
        "`devices[type=fan]`",
    ]
    assert "| `serial` | section or null |  | Its line. |" in lines
    assert "| `tags` | list of sections | **required** | Its tags. |" in lines
