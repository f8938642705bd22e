"""plantwire-collector dead-letters list|show|replay|purge: the dead letter queue from a shell."""

import argparse
import base64
import sys
import textwrap
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from collector.agents import AgentRegistry
from collector.api.dead_letters import DEFAULT_LIMIT, MAX_LIMIT
from collector.api.params import format_ts, parse_limit, parse_time
from collector.api.problems import ProblemError
from collector.app import partition_window
from collector.config import CollectorConfig
from collector.consumer import batch_decoder
from collector.dead_letters import (
    KINDS,
    DeadLetter,
    DeadLetterFilter,
    DeadLetters,
    valid_id,
)
from collector.pagination import decode_cursor
from collector.pools import Pool, run_command
from collector.replay import Replayer
from collector.store import ReadingStore
from collector.tables import print_table
from shared.wire import Topics

ERROR_WIDTH = 60
"""Characters of an error message the listing shows."""

T = TypeVar("T")


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from one of the API's parameter parsers, so both accept the same."""

    def convert(raw: str) -> T:
        try:
            return parse(raw)
        except ProblemError as exc:
            raise argparse.ArgumentTypeError(exc.invalid[0].reason) from None

    return convert


_moment = _argument(lambda raw: parse_time("time", raw, datetime.min))
_limit = _argument(lambda raw: parse_limit(raw, MAX_LIMIT))


def _dead_letter_id(raw: str) -> int:
    dead_letter_id = valid_id(raw)
    if dead_letter_id is None:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {raw!r}")
    return dead_letter_id


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `dead-letters` and its subcommands to the program's subparsers."""
    group = commands.add_parser("dead-letters", help="list, show or purge dead letters")
    actions = group.add_subparsers(dest="action", required=True)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", type=Path, required=True, help="collector YAML file")
    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument("--agent", help="only this agent's")
    scope.add_argument("--reason", help="only this reason, e.g. malformed or timestamp")

    listing = actions.add_parser("list", parents=[config, scope], help="newest first, as a table")
    listing.add_argument("--kind", choices=KINDS, help="only this kind of message")
    listing.add_argument(
        "--from", dest="since", type=_moment, metavar="TIME", help="received at or after"
    )
    listing.add_argument("--to", dest="until", type=_moment, metavar="TIME", help="received before")
    replayed = listing.add_mutually_exclusive_group()
    replayed.add_argument("--replayed", action="store_true", default=None, help="replayed only")
    replayed.add_argument(
        "--not-replayed", dest="replayed", action="store_false", default=None, help="not replayed"
    )
    listing.add_argument(
        "--limit", type=_limit, metavar="N", default=DEFAULT_LIMIT, help="rows per page"
    )
    listing.add_argument(
        "--cursor", metavar="TOKEN", help="continue where a previous listing stopped"
    )

    show = actions.add_parser("show", parents=[config], help="one dead letter with its payload")
    show.add_argument("id", type=_dead_letter_id)
    show.add_argument("--raw", type=Path, metavar="FILE", help="write the payload bytes to FILE")

    purge = actions.add_parser(
        "purge", parents=[config, scope], help="delete dead letters (dry run without --yes)"
    )
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", dest="dead_letter_id", type=_dead_letter_id, metavar="N", help="this one"
    )
    which.add_argument(
        "--before", dest="until", type=_moment, metavar="TIME", help="all received before TIME"
    )
    purge.add_argument("--yes", action="store_true", help="delete (else only count)")

    replay = actions.add_parser(
        "replay",
        parents=[config, scope],
        help="ingest again after the cause is fixed (a batch is stored at most once)",
    )
    chosen = replay.add_mutually_exclusive_group(required=True)
    chosen.add_argument(
        "--id", dest="dead_letter_id", type=_dead_letter_id, metavar="N", help="this one"
    )
    chosen.add_argument("--all", action="store_true", help="every one not yet replayed")


def run(args: argparse.Namespace, config: CollectorConfig) -> int:
    """Carry out a `dead-letters` subcommand; return the exit status."""
    return run_command(config.database, lambda pool: _run(args, config, pool))


async def _run(args: argparse.Namespace, config: CollectorConfig, pool: Pool) -> int:
    store = DeadLetters(pool)
    if args.action == "list":
        return await _list(store, args)
    if args.action == "show":
        return await _show(store, args)
    if args.action == "replay":
        return await _replay(store, _replayer(pool, config), args)
    return await _purge(store, args)


def _cell(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _row(letter: DeadLetter) -> list[str]:
    readings = f"{letter.readings}{' (partial)' if letter.partial else ''}"
    return [
        str(letter.id),
        format_ts(letter.received_at)[:19] + "Z",
        letter.agent_id or "-",
        letter.kind,
        letter.reason,
        readings,
        _cell(" ".join(letter.error.split()), ERROR_WIDTH),
    ]


async def _list(store: DeadLetters, args: argparse.Namespace) -> int:
    try:
        after = decode_cursor(args.cursor) if args.cursor is not None else None
    except ValueError as exc:
        print(f"plantwire-collector: --cursor: {exc}", file=sys.stderr)
        return 2
    selection = DeadLetterFilter(
        agent=args.agent,
        reason=args.reason,
        kind=args.kind,
        since=args.since,
        until=args.until,
        replayed=args.replayed,
    )
    page = await store.list(selection, args.limit, after)
    if not page.items:
        print("no dead letters")
        return 0
    table = [["ID", "RECEIVED", "AGENT", "KIND", "REASON", "READINGS", "ERROR"]]
    table += [_row(letter) for letter in page.items]
    print_table(table)
    if page.next_cursor is not None:
        print(f"more: --cursor {page.next_cursor}")
    return 0


async def _show(store: DeadLetters, args: argparse.Namespace) -> int:
    detail = await store.get(args.id)
    if detail is None:
        print(f"plantwire-collector: no dead letter {args.id}", file=sys.stderr)
        return 1
    letter = detail.letter
    fields: list[tuple[str, object]] = [
        ("id", letter.id),
        ("received", format_ts(letter.received_at)),
        ("topic", letter.topic),
        ("agent", letter.agent_id or "-"),
        ("kind", letter.kind),
        ("reason", letter.reason),
        ("error", letter.error),
        ("batch", "-" if letter.batch_id is None else f"{letter.batch_id} (epoch {letter.epoch})"),
        (
            "readings refused",
            f"{letter.readings}{' (the others stored)' if letter.partial else ''}",
        ),
        ("replayed", format_ts(letter.replayed_at) if letter.replayed_at else "no"),
    ]
    if letter.replay_error:
        fields.append(("replay error", letter.replay_error))
    if detail.dictionary is not None:
        kept = detail.dictionary.dictionary
        where = "not kept by any collector" if kept is None else "from tag_dictionaries"
        fields.append(("tag dictionary", f"{detail.dictionary.hash} ({where})"))
    for name, value in fields:
        print(f"{name + ':':<18}{value}")
    if detail.refused:
        print("refused readings:")
        for reading in detail.refused:
            print(f"  #{reading.idx} seq {reading.seq} {reading.reason}: {reading.error}")
    if detail.dictionary is not None and detail.dictionary.dictionary is not None:
        print(f"tag dictionary ({len(detail.dictionary.dictionary)} bytes, JSON):")
        print(detail.dictionary.dictionary.decode())
    if args.raw is not None:
        args.raw.write_bytes(detail.payload)
        print(f"payload: {len(detail.payload)} bytes written to {args.raw}")
    else:
        print(f"payload ({len(detail.payload)} bytes, base64):")
        encoded = base64.b64encode(detail.payload).decode("ascii")
        print("\n".join(textwrap.wrap(encoded, 76)) if encoded else "")
    return 0


async def _purge(store: DeadLetters, args: argparse.Namespace) -> int:
    selection = DeadLetterFilter(
        agent=args.agent,
        reason=args.reason,
        until=args.until,
        dead_letter_id=args.dead_letter_id,
    )
    if not args.yes:
        count = await store.count(selection)
        print(f"would delete {count} dead letter(s); run again with --yes to delete them")
        return 0
    print(f"deleted {await store.purge(selection)} dead letter(s)")
    return 0


def _replayer(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]], config: CollectorConfig
) -> Replayer:
    return Replayer(
        ReadingStore(pool, partition_window(config.database)),
        AgentRegistry(pool),
        config.ingest,
        Topics(config.mqtt.topic_prefix),
        batch_decoder(config.ingest),
    )


async def _replay(store: DeadLetters, replayer: Replayer, args: argparse.Namespace) -> int:
    if args.dead_letter_id is not None:
        ids = [args.dead_letter_id]
    else:
        selection = DeadLetterFilter(agent=args.agent, reason=args.reason, replayed=False)
        ids, after = [], None
        while True:
            page = await store.list(selection, MAX_LIMIT, after)
            ids += [letter.id for letter in page.items]
            if page.next_cursor is None:
                break
            after = decode_cursor(page.next_cursor)
    failed = 0
    for dead_letter_id in sorted(ids):
        outcome = await replayer.replay(dead_letter_id)
        failed += outcome.status in ("still_failing", "not_found", "partly")
        line = f"{dead_letter_id}: {outcome.status.replace('_', ' ')}"
        if outcome.readings_stored:
            line += f", {outcome.readings_stored} readings stored"
        if outcome.readings_still_refused:
            line += f", {outcome.readings_still_refused} still refused"
        if outcome.error:
            line += f": {outcome.error}"
        print(line)
    if not ids:
        print("no dead letters to replay")
    return 1 if failed else 0
