"""Configuration loading and its generated reference: the less travelled paths."""

import gc
from pathlib import Path
from typing import Annotated

from pydantic import Field

from shared.config import StrictModel, load_config
from shared.config_docs import model_table


class _Limits(StrictModel):
    """Limits."""

    sizes: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list, description="Sizes.")


def test_loading_leaves_a_disabled_cycle_collector_disabled(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("sizes: [1, 2]\n")
    gc.disable()
    try:
        assert load_config(path, _Limits, {}).sizes == [1, 2]
        assert not gc.isenabled(), "a caller that turned it off keeps it off"
    finally:
        gc.enable()
    assert load_config(path, _Limits, {}).sizes == [1, 2]
    assert gc.isenabled(), "and one that had it on gets it back"


class _Disk(StrictModel):
    """A disk."""

    path: str = Field(description="Where.")


class _Memory(StrictModel):
    """Memory."""

    megabytes: int = Field(description="How much.")


class _Store(StrictModel):
    """A store, on disk or in memory."""

    backend: _Disk | _Memory = Field(description="Where it keeps things.")


def test_a_list_of_constrained_values_is_named_by_its_item_type() -> None:
    assert "| `sizes` | list of integer | `[]` | Sizes. |" in model_table(_Limits)


def test_union_members_without_a_type_key_are_headed_by_their_model_name() -> None:
    lines = model_table(_Store)
    headings = [line.removeprefix("### ") for line in lines if line.startswith("### ")]
    assert headings == ["`(top level)`", "`backend[_Disk]`", "`backend[_Memory]`"]
