"""plantwire-agent: run the edge agent, check a configuration, and commissioning helpers."""

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import yaml

from agent import __version__
from agent.buffer import BufferLayoutError
from agent.config import AgentConfig, load_agent_config
from agent.service import AgentService
from agent.sources import build_source
from protocols.base import SourceError
from shared.clock import SystemClock
from shared.errors import ConfigError
from shared.logs import setup_logging

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 30.0


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of plantwire-agent."""
    parser = argparse.ArgumentParser(prog="plantwire-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"plantwire-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="poll devices and forward readings until stopped")
    run.add_argument("--config", type=Path, required=True, help="agent YAML file")
    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config", type=Path, help="agent YAML file")
    discover = commands.add_parser(
        "discover", help="browse an OPC UA server and print a device configuration"
    )
    discover.add_argument("endpoint", help="opc.tcp://host:port[/path]")
    discover.add_argument("--name", default="opcua-device", help="device name to print")
    discover.add_argument("--depth", type=int, default=8, help="levels below Objects to browse")
    discover.add_argument(
        "--include-server",
        action="store_true",
        help="also list the standard Server object's variables",
    )
    cert = commands.add_parser(
        "create-certificate", help="create the agent's OPC UA application certificate"
    )
    cert.add_argument("--certificate", type=Path, required=True, help="certificate file (DER)")
    cert.add_argument("--private-key", type=Path, required=True, help="private key file (PEM)")
    cert.add_argument(
        "--application-uri",
        default="urn:plantwire:agent",
        help="URI put in the certificate; security.application_uri must match",
    )
    cert.add_argument("--hostname", default=socket.gethostname(), help="DNS name in the cert")
    write = commands.add_parser("write", help="write one value to a writable tag and exit")
    write.add_argument("--config", type=Path, required=True, help="agent YAML file")
    write.add_argument("device", help="device name")
    write.add_argument("tag", help="tag name")
    write.add_argument("value", help='value as JSON: true, 42, 1.5, "text"')
    return parser


class Stoppable(Protocol):
    """What run_agent needs of an agent service."""

    async def start(self) -> None:
        """Start working."""
        ...

    async def stop(self) -> None:
        """Stop working and release everything."""
        ...


async def run_agent(
    service: Stoppable, stop: asyncio.Event, *, stop_timeout: float = STOP_TIMEOUT_S
) -> None:
    """Run an agent until `stop` is set; give up waiting for it to stop after `stop_timeout`."""
    await service.start()
    try:
        await stop.wait()
    finally:
        try:
            await asyncio.wait_for(service.stop(), stop_timeout)
        except TimeoutError:
            # Committed readings are safe in the buffer whatever happens now; a stop that
            # hangs must not keep the process (and its supervisor) waiting forever.
            log.error("the agent did not stop within %.0f s; exiting anyway", stop_timeout)


async def write_once(config: AgentConfig, device_name: str, tag: str, raw: str) -> str:
    """Connect to one device, write one tag, and say what happened."""
    device = next((d for d in config.devices if d.name == device_name), None)
    if device is None:
        raise SourceError(f"no device {device_name!r} in the configuration")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SourceError(f"value {raw!r} is not JSON (strings need quotes)") from exc
    source = build_source(device, SystemClock())
    await source.connect()
    try:
        await source.write(tag, value)
    finally:
        await source.close()
    return f"{device_name}/{tag} = {value!r}"


async def create_certificate(args: argparse.Namespace) -> str:
    """Create (or keep, if still valid) a self-signed client certificate and key."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    args.certificate.parent.mkdir(parents=True, exist_ok=True)
    args.private_key.parent.mkdir(parents=True, exist_ok=True)
    await setup_self_signed_certificate(
        args.private_key,
        args.certificate,
        args.application_uri,
        args.hostname,
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        {"commonName": f"Plantwire agent {args.hostname}"},
    )
    return (
        f"certificate {args.certificate} and key {args.private_key} ready for"
        f" {args.application_uri}; give the certificate to the OPC UA server to trust"
    )


async def discover_device(args: argparse.Namespace) -> str:
    """YAML of a device entry listing every variable the server has."""
    from protocols.opcua.discover import discover

    tags, skipped = await discover(
        args.endpoint, depth=args.depth, include_server=args.include_server
    )
    device = {"name": args.name, "type": "opcua", "endpoint": args.endpoint, "tags": tags}
    text = yaml.safe_dump({"devices": [device]}, sort_keys=False, width=120)
    notes = "".join(f"# skipped {note}\n" for note in skipped)
    return f"# {len(tags)} variables found on {args.endpoint}\n{notes}{text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of plantwire-agent."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "discover":
            print(asyncio.run(discover_device(args)), end="")
            return 0
        if args.command == "create-certificate":
            print(asyncio.run(create_certificate(args)))
            return 0
        config = load_agent_config(args.config)
        if args.command == "write":
            print(asyncio.run(write_once(config, args.device, args.tag, args.value)))
            return 0
    except ConfigError as exc:
        print(f"plantwire-agent: {exc}", file=sys.stderr)
        return 2
    except (SourceError, OSError, TimeoutError) as exc:
        print(f"plantwire-agent: {exc}", file=sys.stderr)
        return 1
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

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run())
    except BufferLayoutError as exc:
        print(f"plantwire-agent: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
