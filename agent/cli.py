"""plantwire-agent: run the edge agent, check a configuration, and commissioning helpers."""

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agent import __version__
from agent.buffer import BufferLayoutError
from agent.config import AgentConfig, load_agent_config
from agent.http import ListenError
from agent.service import AgentService
from agent.sources import build_source, device_file_problems
from protocols.base import SourceError
from protocols.opcua.config import OpcUaIdentity, OpcUaSecurity
from shared.clock import SystemClock
from shared.errors import ConfigError
from shared.logs import setup_logging
from shared.memory import limit_malloc_arenas, settle_startup_objects

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 30.0
ModelT = TypeVar("ModelT", bound=BaseModel)


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
        "discover",
        help="browse an OPC UA server and print an agent configuration that reads it",
    )
    discover.add_argument("endpoint", help="opc.tcp://host:port[/path]")
    discover.add_argument("--name", default="opcua-device", help="device name to print")
    discover.add_argument("--depth", type=int, default=8, help="levels below Objects to browse")
    discover.add_argument(
        "--include-server",
        action="store_true",
        help="also list the standard Server object's variables",
    )
    discover.add_argument("--agent-id", default="edge-agent", help="agent.id to print")
    discover.add_argument(
        "--buffer", default="/var/lib/plantwire/buffer.sqlite", help="buffer.path to print"
    )
    discover.add_argument("--mqtt-url", default="mqtt://localhost:1883", help="mqtt.url to print")
    _add_section_options(discover, "security", OpcUaSecurity)
    _add_section_options(discover, "identity", OpcUaIdentity)
    trust = commands.add_parser(
        "trust", help="fetch an OPC UA server's certificate and add it to a trust store"
    )
    trust.add_argument("endpoint", help="opc.tcp://host:port[/path]")
    trust.add_argument(
        "--trust-store", type=Path, required=True, help="folder of trusted certificates"
    )
    trust.add_argument("--yes", action="store_true", help="store without asking")
    trust.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for it")
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


def _is_path(annotation: object) -> bool:
    return annotation is Path or Path in typing.get_args(annotation)


def _add_section_options(
    parser: argparse.ArgumentParser, section: str, model: type[BaseModel]
) -> None:
    """One --SECTION-KEY option per key of a device config section, described as in the docs."""
    group = parser.add_argument_group(
        f"{section}", f"the keys of a device's `{section}` section (see docs/configuration.md)"
    )
    for key, field in model.model_fields.items():
        group.add_argument(
            f"--{section}-{key.replace('_', '-')}",
            dest=f"{section}__{key}",
            type=(lambda text: Path(text).resolve()) if _is_path(field.annotation) else str,
            help=field.description,
        )


def _section_from_options(args: argparse.Namespace, section: str, model: type[ModelT]) -> ModelT:
    """The section the options describe, validated by the same model as a device's."""
    values = {
        key: value
        for key in model.model_fields
        if (value := getattr(args, f"{section}__{key}")) is not None
    }
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = [
            f"--{section}-{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
            if e["loc"]
            else f"{section}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigError("invalid options\n  " + "\n  ".join(problems)) from exc


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


async def discover_config(args: argparse.Namespace) -> str:
    """YAML of a complete agent configuration reading every variable the server has."""
    from protocols.opcua.discover import discover

    security = _section_from_options(args, "security", OpcUaSecurity)
    identity = _section_from_options(args, "identity", OpcUaIdentity)
    tags, skipped = await discover(
        args.endpoint,
        security=security,
        identity=identity,
        depth=args.depth,
        include_server=args.include_server,
    )
    if not tags:
        raise SourceError(f"{args.endpoint}: no variable of a type Plantwire reads was found")
    device: dict[str, Any] = {"name": args.name, "type": "opcua", "endpoint": args.endpoint}
    if security.policy != "None":
        device["security"] = security.model_dump(mode="json", exclude_none=True)
    if identity.type != "anonymous":
        device["identity"] = identity.model_dump(mode="json", exclude_none=True)
        if identity.password is not None:
            device["identity"]["password"] = identity.password.get_secret_value()
    device["tags"] = tags
    document = {
        "agent": {"id": args.agent_id},
        "buffer": {"path": args.buffer},
        "mqtt": {"url": args.mqtt_url},
        "devices": [device],
    }
    try:  # never print a configuration that check-config would refuse
        AgentConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"the discovered configuration is not valid: {exc}") from exc
    writable = sum(1 for tag in tags if tag.get("writable"))
    text = yaml.safe_dump(document, sort_keys=False, width=120)
    notes = "".join(f"# skipped {note}\n" for note in skipped)
    return (
        f"# {len(tags)} variables found on {args.endpoint}, {writable} of them writable"
        " (writes stay refused unless a tag says writable: true; remove what you do not need)\n"
        f"{notes}{text}"
    )


def trust_server(args: argparse.Namespace) -> int:
    """Show the server's certificate; store it in the trust store if the user confirms."""
    from protocols.opcua.discover import server_certificates
    from protocols.opcua.trust import store_certificate, subject, thumbprint

    certificates = asyncio.run(server_certificates(args.endpoint, timeout=args.timeout))
    if not certificates:
        raise SourceError(f"{args.endpoint} sent no certificate (it offers no secure endpoint)")
    stored = 0
    for certificate in certificates:
        print(f"server certificate of {args.endpoint}")
        print(f"  subject: {subject(certificate)}")
        print(f"  SHA-256: {thumbprint(certificate)}")
        print(f"  valid:   {certificate.not_valid_before_utc} .. {certificate.not_valid_after_utc}")
        if not args.yes and not _confirm(f"Trust it and store it in {args.trust_store}? [y/N] "):
            print("not stored")
            continue
        path = store_certificate(args.trust_store, certificate)
        print(f"stored as {path}")
        stored += 1
    return 0 if stored else 1


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of plantwire-agent."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        limit_malloc_arenas()
    try:
        if args.command == "discover":
            print(asyncio.run(discover_config(args)), end="")
            return 0
        if args.command == "trust":
            return trust_server(args)
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
        problems = device_file_problems(config.devices)
        if problems:
            print(
                f"plantwire-agent: {args.config}: invalid configuration\n  "
                + "\n  ".join(problems),
                file=sys.stderr,
            )
            return 2
        tags = sum(len(device.tags) for device in config.devices)
        print(
            f"{args.config}: OK: agent {config.agent.id}, {len(config.devices)} devices,"
            f" {tags} tags"
        )
        return 0
    setup_logging(config.agent.log_level)

    async def run(config: AgentConfig) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        service = AgentService(config)
        del config  # the service keeps what it runs on; the tag models can go
        settle_startup_objects()
        await run_agent(service, stop)

    agent = run(config)
    del config  # held by the coroutine alone, until the service is built
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(agent)
    except BufferLayoutError as exc:
        print(f"plantwire-agent: {exc}", file=sys.stderr)
        return 1
    except ListenError as exc:
        print(f"plantwire-agent: {args.config}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
