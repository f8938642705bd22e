"""Configuration loading: strict models, clear errors naming keys, env overrides, samples."""

from pathlib import Path

import pytest

from agent.config import ENV_OVERRIDES, AgentConfig, load_agent_config
from collector.config import load_collector_config
from shared.config import (
    StrictModel,
    format_duration,
    load_config,
    parse_duration,
    require_unique,
)
from shared.errors import ConfigError
from shared.mqtt import MqttSettings

ROOT = Path(__file__).resolve().parents[2]
AGENT_SAMPLES = [
    ROOT / "config" / "agent.yaml",
    ROOT / "protocols" / "modbus" / "sample.yaml",
    ROOT / "protocols" / "opcua" / "sample.yaml",
]


@pytest.mark.parametrize("path", AGENT_SAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_agent_sample_loads(path: Path) -> None:
    config = load_agent_config(path)
    assert config.devices


@pytest.mark.parametrize("path", AGENT_SAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_dumped_agent_config_reads_back(path: Path) -> None:
    config = load_agent_config(path)
    assert AgentConfig.model_validate(config.model_dump()) == config
    assert AgentConfig.model_validate_json(config.model_dump_json()).agent == config.agent


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5.0, "5s"),
        (0.25, "0.25s"),
        (1e-05, "0.00001s"),
        (86400.0, "86400s"),
        (1e16, "10000000000000000s"),  # repr() is 1e+16: no decimal point to trim after
    ],
)
def test_durations_dump_as_they_are_written(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_collector_sample_loads() -> None:
    config = load_collector_config(ROOT / "config" / "collector.yaml")
    assert config.http.port == 8080


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1.5s", 1.5),
        (" 20 ms ", 0.02),
        (0, 0.0),
        (0.0, 0.0),
        ("0", 0.0),
    ],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (1000, "1000 has no unit: write 1000ms or 1000s"),
        (2.5, "2.5 has no unit: write 2.5ms or 2.5s"),
        ("10", "10 has no unit: write 10ms or 10s"),
    ],
)
def test_a_bare_number_needs_a_unit(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(raw)


def test_bad_duration_names_the_format() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("soon")


def test_non_string_durations_are_left_to_pydantic() -> None:
    assert parse_duration(True) is True
    assert parse_duration([1]) == [1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


MINIMAL = """
agent: {id: a1}
buffer: {path: /tmp/b.sqlite}
mqtt: {url: "mqtt://localhost"}
devices:
  - {type: modbus, name: d1, host: h, tags: [{name: t, table: holding_register, address: 0}]}
"""


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, MINIMAL))
    assert config.forward.batch_max_readings == 10_000
    assert config.mqtt.port == 1883
    assert config.mqtt.protocol == "3.1.1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            MINIMAL.replace("agent: {id: a1}", "agent: {id: a1, colour: red}"),
            "agent.colour: unknown key",
        ),
        (MINIMAL.replace("buffer: {path: /tmp/b.sqlite}", ""), "buffer: required key is missing"),
        (MINIMAL.replace("host: h,", "host: h, port: many,"), "devices.0.modbus.port"),
        (MINIMAL.replace("type: modbus", "type: profinet"), "devices.0"),
        (MINIMAL.replace("name: d1", "name: d/1"), "devices.0.modbus.name"),
        (MINIMAL + MINIMAL.split("devices:")[1], "device names must be unique"),
        ("- a\n- b\n", "expected a mapping"),
        (
            MINIMAL.replace("name: d1,", "name: d1, poll_interval: 1000,"),
            "devices.0.modbus.poll_interval: 1000 has no unit: write 1000ms or 1000s",
        ),
        (
            MINIMAL.replace("agent: {id: a1}", "agent: {id: a1, log_level: verbose}"),
            "agent.log_level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"
            " (got 'verbose')",
        ),
        ("agent: [unclosed\n", "not valid YAML"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_agent_config(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_empty_file_reports_every_missing_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agent: required key is missing"):
        load_agent_config(write(tmp_path, ""))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_agent_config(tmp_path / "absent.yaml")


def test_environment_overrides_url_and_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    config = load_config(
        path,
        AgentConfig,
        {
            "PLANTWIRE_MQTT_URL": ("mqtt", "url"),
            "PLANTWIRE_MQTT_PASSWORD": ("mqtt", "password"),
            "PLANTWIRE_NEW": ("fresh", "key"),
        },
        environ={"PLANTWIRE_MQTT_URL": "mqtts://broker:9999", "PLANTWIRE_MQTT_PASSWORD": "s3cret"},
    )
    assert config.mqtt.host == "broker"
    assert config.mqtt.port == 9999
    assert config.mqtt.uses_tls
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "s3cret"


EVERYWHERE = "0.0.0.0"  # noqa: S104 - what the agent image listens on, so it can be scraped


def test_the_agent_image_variables_place_the_buffer_and_open_the_metrics_port(
    tmp_path: Path,
) -> None:
    config = load_config(
        write(tmp_path, MINIMAL),
        AgentConfig,
        ENV_OVERRIDES,
        environ={"PLANTWIRE_BUFFER_PATH": "/var/lib/x.sqlite", "PLANTWIRE_HTTP_HOST": EVERYWHERE},
    )
    assert str(config.buffer.path) == "/var/lib/x.sqlite"
    assert config.agent.http_host == EVERYWHERE


def test_override_creates_missing_sections(tmp_path: Path) -> None:
    class Inner(StrictModel):
        url: str

    class Outer(StrictModel):
        mqtt: Inner

    path = tmp_path / "c.yaml"
    path.write_text("mqtt: 3\n")
    config = load_config(path, Outer, {"URL": ("mqtt", "url")}, environ={"URL": "x"})
    assert config.mqtt.url == "x"


def test_require_unique_lists_repeats() -> None:
    require_unique(["a", "b"], "names")
    with pytest.raises(ValueError, match="repeated: a, b"):
        require_unique(["a", "b", "a", "b", "c"], "names")


def test_mqtt_url_scheme_is_checked() -> None:
    with pytest.raises(ValueError, match="mqtt://host"):
        MqttSettings(url="http://broker")
    assert MqttSettings(url="mqtts://broker").port == 8883


def test_log_levels_are_checked_in_any_case(tmp_path: Path) -> None:
    config = load_agent_config(
        write(tmp_path, MINIMAL.replace("{id: a1}", "{id: a1, log_level: warning}"))
    )
    assert config.agent.log_level == "WARNING"
    collector = tmp_path / "collector.yaml"
    collector.write_text(
        "collector: {log_level: trace}\ndatabase: {url: 'postgresql://h/db'}\n"
        "mqtt: {url: 'mqtt://h'}\n"
    )
    with pytest.raises(ConfigError, match=r"collector\.log_level: Input should be 'DEBUG'"):
        load_collector_config(collector)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"reconnect_max": "2500ms"}, "paho waits whole seconds; got 2.5s"),
        ({"reconnect_min": "0s"}, "greater than or equal to 1"),
        ({"reconnect_min": "10s", "reconnect_max": "5s"}, "must not be shorter"),
    ],
)
def test_mqtt_reconnect_backoff_is_checked(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MqttSettings.model_validate({"url": "mqtt://h", **changes})
    settings = MqttSettings.model_validate(
        {"url": "mqtt://h", "reconnect_min": "2s", "reconnect_max": "2m"}
    )
    assert (settings.reconnect_min, settings.reconnect_max) == (2.0, 120.0)
