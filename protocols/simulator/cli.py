"""plantwire-sim: serve one simulated machine over OPC UA and Modbus TCP until interrupted."""

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from protocols.simulator.machine import TAGS, SimTag, bulk_tags
from protocols.simulator.opcua_server import NAMESPACE_URI, node_name
from protocols.simulator.runner import Simulator
from protocols.simulator.scenario import load_scenario
from protocols.simulator.scenario_player import play_scenario
from shared.errors import ConfigError
from shared.logs import setup_logging


def _unit_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of unit ids: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of plantwire-sim."""
    parser = argparse.ArgumentParser(
        prog="plantwire-sim",
        description="Serve a simulated machine over OPC UA and Modbus TCP.",
        epilog="plantwire-sim scenario FILE plays a scenario script instead"
        " (plantwire-sim scenario --help).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--opcua-port", type=int, default=4840, help="OPC UA port (0: off)")
    parser.add_argument("--modbus-port", type=int, default=5020, help="Modbus TCP port (0: off)")
    parser.add_argument("--tick", type=float, default=0.1, help="seconds between machine updates")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the machine model")
    parser.add_argument(
        "--byte-order",
        choices=["ABCD", "BADC", "CDAB", "DCBA"],
        default="ABCD",
        help="Modbus byte/word order of multi-register values",
    )
    parser.add_argument(
        "--modbus-framing",
        choices=["socket", "rtu"],
        default="socket",
        help="framing on the Modbus TCP port: Modbus TCP (socket) or RTU over TCP",
    )
    parser.add_argument(
        "--modbus-units",
        type=_unit_list,
        default=(),
        help="unit ids answered by machines of their own, e.g. 2,3 (others read the main one)",
    )
    parser.add_argument("--serial", help="also serve Modbus RTU on this serial device")
    parser.add_argument("--baudrate", type=int, default=19200, help="serial line speed")
    parser.add_argument("--bulk-tags", type=int, default=0, help="synthetic tags for load tests")
    parser.add_argument("--list-tags", action="store_true", help="print the tag map and exit")
    parser.add_argument("--log-level", default="INFO")
    return parser


def tag_map(tags: Sequence[SimTag] = TAGS) -> str:
    """The simulator's tags and where each protocol serves them, as a table."""
    lines = [f"{'tag':<15} {'type':<8} {'modbus':<24} opcua (nsu={NAMESPACE_URI})"]
    for tag in tags:
        modbus = f"{tag.modbus_table}@{tag.modbus_address}" if tag.modbus_table else "-"
        access = " (writable)" if tag.writable else ""
        lines.append(
            f"{tag.name:<15} {tag.data_type.value:<8} {modbus:<24} s={node_name(tag)}{access}"
        )
    return "\n".join(lines)


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Run the simulator until `stop` is set."""
    simulator = Simulator(
        host=args.host,
        opcua_port=args.opcua_port or None,
        modbus_port=args.modbus_port or None,
        rtu_over_tcp=args.modbus_framing == "rtu",
        serial_port=args.serial,
        modbus_units=args.modbus_units,
        baudrate=args.baudrate,
        tick_s=args.tick,
        seed=args.seed,
        byte_order=args.byte_order,
        bulk=args.bulk_tags,
    )
    await simulator.start()
    where = []
    if simulator.opcua is not None:
        where.append(f"OPC UA {simulator.opcua.endpoint}")
    if args.modbus_port:
        where.append(f"Modbus {args.modbus_framing} {args.host}:{args.modbus_port}")
    if args.serial:
        where.append(f"Modbus RTU {args.serial}")
    print("plantwire-sim serving " + ", ".join(where), flush=True)
    try:
        await stop.wait()
    finally:
        await simulator.stop()


def build_scenario_parser() -> argparse.ArgumentParser:
    """Command-line options of plantwire-sim scenario."""
    parser = argparse.ArgumentParser(
        prog="plantwire-sim scenario",
        description="Play a scenario script over OPC UA, each value stamped with its scenario"
        " time; exit 0 once every event is played.",
    )
    parser.add_argument("file", type=Path, help="scenario file (YAML)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--opcua-port", type=int, default=4840, help="OPC UA port")
    parser.add_argument(
        "--speed", type=float, help="scenario seconds per real second (default: the file's speed)"
    )
    parser.add_argument(
        "--subscribers",
        type=int,
        default=0,
        help="start playing once this many clients subscribed to every machine (default 0:"
        " at once)",
    )
    parser.add_argument(
        "--linger", type=float, default=2.0, help="seconds to keep serving after the last event"
    )
    parser.add_argument("--hold", action="store_true", help="keep serving until interrupted")
    parser.add_argument("--log-level", default="INFO")
    return parser


async def play(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Play a scenario; 0 once it is done and held, 1 if stopped before it was done."""
    scenario = load_scenario(args.file)
    async with play_scenario(
        scenario,
        host=args.host,
        port=args.opcua_port,
        speed=args.speed,
        subscribers=args.subscribers,
    ) as player:
        print(f"plantwire-sim playing {args.file} on OPC UA {player.endpoint}", flush=True)
        stopped = asyncio.create_task(stop.wait())
        playing = asyncio.create_task(player.done(timeout=None))
        try:
            await asyncio.wait({stopped, playing}, return_when=asyncio.FIRST_COMPLETED)
            if not playing.done():
                return 1
            playing.result()
            print(f"plantwire-sim scenario done at {scenario.end.isoformat()}", flush=True)
            await asyncio.wait({stopped}, timeout=None if args.hold else args.linger)
        finally:
            for task in (stopped, playing):
                task.cancel()
            await asyncio.wait({stopped, playing})
    return 0


def _run_until_signal(work: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run `work` with an event that SIGINT and SIGTERM set."""

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await work(stop)

    code = 0
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(run())
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of plantwire-sim."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["scenario"]:
        options = build_scenario_parser().parse_args(argv[1:])
        setup_logging(options.log_level)
        try:
            return _run_until_signal(lambda stop: play(options, stop))
        except ConfigError as exc:
            print(f"plantwire-sim: {exc}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    if args.list_tags:
        print(tag_map(TAGS + bulk_tags(args.bulk_tags)))
        return 0
    setup_logging(args.log_level)

    async def serve_until(stop: asyncio.Event) -> int:
        await serve(args, stop)
        return 0

    return _run_until_signal(serve_until)


if __name__ == "__main__":
    sys.exit(main())
