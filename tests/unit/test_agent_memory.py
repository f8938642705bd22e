"""A built agent keeps no Modbus tag models: its sources hold compact points instead."""

import gc
import hashlib
import json
import weakref
from pathlib import Path

import pytest

from agent.config import AgentConfig, load_agent_config
from agent.health import config_hash
from agent.service import AgentService
from tests.harness import agent_config, modbus_device
from tests.servers import free_port


def two_modbus_devices(tmp_path: Path) -> AgentConfig:
    """Two devices on one endpoint (the pool keeps the first's settings), one reporting by
    exception (its filter is built from the tags)."""
    port = free_port()
    return agent_config(
        agent_id="lean",
        buffer=tmp_path / "b.sqlite",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",
        prefix="lean",
        devices=[
            modbus_device(port, name="first"),
            {**modbus_device(port, name="second"), "report_by_exception": True},
        ],
    )


async def test_the_built_service_lets_the_tag_models_go(tmp_path: Path) -> None:
    config = two_modbus_devices(tmp_path)
    expected_hash = hashlib.sha256(config.model_dump_json().encode()).hexdigest()
    tags = [weakref.ref(tag) for device in config.devices for tag in device.tags]
    service = AgentService(config)
    del config
    gc.collect()
    assert [ref for ref in tags if ref() is not None] == []
    # What runs later still has what it needs.
    will = json.loads(service.health.will().payload)
    assert (will["config_hash"], will["devices"]) == (expected_hash, ["first", "second"])
    assert service.config.agent.id == "lean"


ROOT = Path(__file__).resolve().parents[2]
SAMPLES = [
    ROOT / "config" / "agent.yaml",
    ROOT / "protocols" / "modbus" / "sample.yaml",
    ROOT / "protocols" / "opcua" / "sample.yaml",
]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_config_hash_is_that_of_the_configs_json(sample: Path) -> None:
    config = load_agent_config(sample)
    assert config_hash(config) == hashlib.sha256(config.model_dump_json().encode()).hexdigest()


def test_the_config_hash_of_devices_and_tags_of_every_kind(tmp_path: Path) -> None:
    modbus = load_agent_config(SAMPLES[1]).devices[0]
    opcua = load_agent_config(SAMPLES[2]).devices[0]
    config = two_modbus_devices(tmp_path).model_copy(
        update={"devices": [modbus, opcua, modbus.model_copy(update={"name": "again"})]}
    )
    assert config_hash(config) == hashlib.sha256(config.model_dump_json().encode()).hexdigest()
    changed = config.model_copy(update={"devices": [modbus, opcua]})
    assert config_hash(changed) != config_hash(config)
