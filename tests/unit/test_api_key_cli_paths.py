"""plantwire-collector api-key create --expires: a future RFC 3339 time, or a usage error."""

from pathlib import Path

import pytest

from collector.cli import main as collector_main


@pytest.mark.parametrize(
    ("expires", "says"),
    [
        ("soon", "expected an RFC 3339 timestamp such as 2027-01-31T00:00:00Z, got 'soon'"),
        ("2099-01-31T00:00:00", "the timestamp needs a time zone, e.g. a trailing Z"),
        ("2020-01-31T00:00:00Z", "must be in the future"),
    ],
)
def test_a_bad_expiry_is_a_usage_error_before_the_database_is_asked(
    expires: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["api-key", "create", "--config", str(tmp_path / "absent.yaml")]
    argv += ["--name", "ops", "--role", "viewer", "--expires", expires]
    with pytest.raises(SystemExit) as stopped:
        collector_main(argv)
    assert stopped.value.code == 2
    assert f"argument --expires: {says}" in capsys.readouterr().err
