"""plantwire-agent: run the edge agent, or check a configuration file."""

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.config import load_agent_config
from agent.service import AgentService
from shared.errors import ConfigError
from shared.logs import setup_logging


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of plantwire-agent."""
    parser = argparse.ArgumentParser(prog="plantwire-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"plantwire-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="poll devices and forward readings until stopped")
    run.add_argument("--config", type=Path, required=True, help="agent YAML file")
    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config", type=Path, help="agent YAML file")
    return parser


async def run_agent(service: AgentService, stop: asyncio.Event) -> None:
    """Run an agent until `stop` is set."""
    await service.start()
    try:
        await stop.wait()
    finally:
        await service.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of plantwire-agent."""
    args = build_parser().parse_args(argv)
    try:
        config = load_agent_config(args.config)
    except ConfigError as exc:
        print(f"plantwire-agent: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        tags = sum(len(device.tags) for device in config.devices)
        print(
            f"{args.config}: OK: agent {config.agent.id}, {len(config.devices)} devices,"
            f" {tags} tags"
        )
        return 0
    setup_logging(config.agent.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_agent(AgentService(config), stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
