"""Write docs/configuration.md from the configuration models (run after changing a model)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.config import ENV_OVERRIDES as AGENT_ENV  # noqa: E402
from agent.config import AgentConfig  # noqa: E402
from collector.config import ENV_OVERRIDES as COLLECTOR_ENV  # noqa: E402
from collector.config import CollectorConfig  # noqa: E402
from shared.config_docs import model_table  # noqa: E402

INTRO = """# Configuration

Each program reads one YAML file. Unknown keys, wrong types and missing required keys stop
start-up with a message naming the file and the key path. Durations are written with their unit:
`500ms`, `5s`, `2m`, `1h`, `7d` (decimals allowed, e.g. `1.5s`). A bare number is refused, since
other gateways read `1000` as milliseconds and Plantwire once read it as seconds; only `0` may go
without a unit. Check a file without starting anything:
`plantwire-agent check-config FILE` or `plantwire-collector check-config FILE`.

This page is generated from the models' field descriptions by `python scripts/config_docs.py`;
a test fails when it is out of date.

Samples: [`config/agent.yaml`](../config/agent.yaml),
[`config/collector.yaml`](../config/collector.yaml),
[`protocols/modbus/sample.yaml`](../protocols/modbus/sample.yaml),
[`protocols/opcua/sample.yaml`](../protocols/opcua/sample.yaml).
"""


def env_table(overrides: dict[str, tuple[str, ...]]) -> list[str]:
    lines = ["| variable | replaces |", "| --- | --- |"]
    lines += [f"| `{name}` | `{'.'.join(path)}` |" for name, path in overrides.items()]
    return [*lines, ""]


def render() -> str:
    lines = [INTRO, "## plantwire-agent", "", "Environment overrides:", "", *env_table(AGENT_ENV)]
    lines += model_table(AgentConfig)
    lines += ["## plantwire-collector", "", "Environment overrides:", "", *env_table(COLLECTOR_ENV)]
    lines += model_table(CollectorConfig)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    (ROOT / "docs" / "configuration.md").write_text(render())
