"""plantwire-collector api-key create|list|revoke: API keys from a shell (for the first admin)."""

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from collector.api.api_keys import key_out
from collector.api.auth import CACHE_S
from collector.api.keys import ApiKeys
from collector.api.operations import Role
from collector.api.params import format_ts
from collector.config import CollectorConfig
from collector.migrate import migrate
from collector.pools import Pool, run_command
from collector.tables import print_table

CREATED_BY = "cli"


def _expiry(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an RFC 3339 timestamp such as 2027-01-31T00:00:00Z, got {raw!r}"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("the timestamp needs a time zone, e.g. a trailing Z")
    if moment <= datetime.now(UTC):
        raise argparse.ArgumentTypeError("must be in the future")
    return moment


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `api-key` and its subcommands to the program's subparsers."""
    group = commands.add_parser("api-key", help="create, list or revoke API keys")
    actions = group.add_subparsers(dest="action", required=True)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", type=Path, required=True, help="collector YAML file")
    create = actions.add_parser("create", parents=[config], help="make a key and print it once")
    create.add_argument("--name", required=True, help="what or who it is for")
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument("--expires", type=_expiry, metavar="TIME", help="RFC 3339; default never")
    actions.add_parser("list", parents=[config], help="every key, revoked ones too")
    revoke = actions.add_parser("revoke", parents=[config], help="revoke a key by its prefix")
    revoke.add_argument("prefix", help="the 8 characters after pwk_")


def run(args: argparse.Namespace, config: CollectorConfig) -> int:
    """Carry out an `api-key` subcommand; return the exit status."""
    return run_command(config.database, lambda pool: _run(args, config, pool))


async def _run(args: argparse.Namespace, config: CollectorConfig, pool: Pool) -> int:
    if config.database.migrate_on_start:
        # The first admin key is made before the collector first starts.
        async with pool.connection() as conn:
            await migrate(conn)
    keys = ApiKeys(pool)
    if args.action == "create":
        stored, key = await keys.create(args.name, Role(args.role), args.expires, CREATED_BY)
        print(f"created {stored.role.value} key {stored.prefix} ({stored.name})")
        print("the key, shown this once:")
        print(key)
        return 0
    if args.action == "list":
        rows = [["PREFIX", "NAME", "ROLE", "ACTIVE", "CREATED", "EXPIRES", "LAST USED"]]
        after = 0
        while page := await keys.listing(after, 1000):
            after = page[-1].id
            for stored in page:
                shown = key_out(stored)
                rows.append(
                    [
                        shown.prefix,
                        shown.name,
                        shown.role.value,
                        "yes" if shown.active else "no",
                        format_ts(shown.created_at),
                        format_ts(shown.expires_at) if shown.expires_at else "never",
                        format_ts(shown.last_used_at) if shown.last_used_at else "-",
                    ]
                )
        print_table(rows)
        return 0
    revoked = await keys.revoke(args.prefix, CREATED_BY)
    if revoked is None:
        print(f"plantwire-collector: no key with prefix {args.prefix!r}", file=sys.stderr)
        return 1
    print(
        f"revoked key {revoked.prefix} ({revoked.name}); every replica refuses it within"
        f" {CACHE_S:g} s"
    )
    return 0
