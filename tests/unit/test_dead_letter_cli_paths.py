"""The dead-letters commands refuse a bad id before touching any database."""

import pytest

from collector.cli import build_parser


@pytest.mark.parametrize("action", [["show"], ["purge", "--id"], ["replay", "--id"]])
@pytest.mark.parametrize("raw", ["0", "seven", "-3"])
def test_an_id_that_is_not_a_positive_whole_number_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], action: list[str], raw: str
) -> None:
    argv = ["dead-letters", action[0], "--config", "collector.yaml", *action[1:], raw]
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert f"expected a positive whole number, got {raw!r}" in capsys.readouterr().err
