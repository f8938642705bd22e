"""The collector configuration's cross-field checks, as an operator reads them."""

from pathlib import Path

import pytest

from collector.config import load_collector_config
from shared.errors import ConfigError

BASE = "database: {url: 'postgresql://h/db'}\nmqtt: {url: 'mqtt://h:1883'}\n"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("http: {port: 8080, ops_port: 8080}", "http: ops_port must differ from port"),
        (
            "ingest: {oldest_timestamp: '2100-01-01T00:00:00Z'}",
            "ingest: oldest_timestamp must be earlier than newest_timestamp",
        ),
        (
            "rate_limits: {viewer: 'lots'}",
            "rate_limits.viewer: expected a rate such as 600/minute or 20/second, got 'lots'",
        ),
        (
            "commands: {default_expiry: 2h}",
            "commands: default_expiry must not be longer than max_expiry",
        ),
        (
            "rate_limits: {redis_url: 'http://cache:6379/0'}",
            "rate_limits: redis_url: expected redis://host:port/db or rediss://...",
        ),
    ],
)
def test_a_contradictory_setting_names_its_key(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(BASE + section + "\n")
    with pytest.raises(ConfigError) as caught:
        load_collector_config(path)
    assert message in str(caught.value)


def test_the_checked_settings_load_when_consistent(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(
        BASE + "http: {port: 8080, ops_port: 9090}\n"
        "rate_limits: {viewer: 20/second, redis_url: 'rediss://cache:6380/1'}\n"
    )
    config = load_collector_config(path)
    assert (config.http.port, config.http.ops_port) == (8080, 9090)
    assert config.rate_limits.viewer == "20/second"
