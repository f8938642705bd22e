"""Smoke test of a deployed collector: health, readiness, the API contract and one keyed read.

Usage: PLANTWIRE_SMOKE_KEY=pwk_... python3 scripts/smoke.py --api URL [--ops URL] [--wait S]

`--api` is the base URL of the HTTP API, `--ops` that of /healthz and /readyz (the chart serves
them on a port of their own; default: the API's). The key (any role) comes from the environment
so it never shows in a process list. Standard library only: it runs on a bare CI runner.
Exit status 0 when every check passed, 1 otherwise; one line per check.
"""

import argparse
import http.client
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

KEY_VARIABLE = "PLANTWIRE_SMOKE_KEY"
REQUEST_TIMEOUT_S = 10.0


class SmokeError(Exception):
    """A check's answer was not what a working collector gives."""


def fetch(url: str, key: str | None = None) -> tuple[int, Any]:
    """GET `url` (with the key as a Bearer token); the status and the JSON body (None if not)."""
    parts = urllib.parse.urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.netloc, timeout=REQUEST_TIMEOUT_S)
    elif parts.scheme == "http":
        connection = http.client.HTTPConnection(parts.netloc, timeout=REQUEST_TIMEOUT_S)
    else:
        raise SmokeError(f"expected an http or https URL, got {url!r}")
    headers = {"Accept": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request(
            "GET", parts.path + (f"?{parts.query}" if parts.query else ""), None, headers
        )
        response = connection.getresponse()
        status, body = response.status, response.read()
    finally:
        connection.close()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def expect_status(url: str, status: int, key: str | None = None) -> Any:
    """The JSON body of `url`, which must answer `status`."""
    got, body = fetch(url, key)
    if got != status:
        raise SmokeError(f"expected {status}, got {got}: {json.dumps(body)[:300]}")
    return body


def checks(api: str, ops: str, key: str) -> list[tuple[str, Callable[[], None]]]:
    """The checks in order, each named by what it proves."""

    def contract() -> None:
        body = expect_status(f"{api}/api/openapi.json", 200)
        if not isinstance(body, dict) or "/api/v1/tags" not in body.get("paths", {}):
            raise SmokeError("the contract does not list /api/v1/tags")

    def keyed_read() -> None:
        body = expect_status(f"{api}/api/v1/tags?limit=1", 200, key)
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise SmokeError("the tag page has no items list")

    return [
        ("healthz: database and broker connected", lambda: expect_status(f"{ops}/healthz", 200)),
        ("readyz: the API can serve", lambda: expect_status(f"{ops}/readyz", 200)),
        ("openapi.json: the contract is served", contract),
        (
            "GET /api/v1/tags without a key: refused",
            lambda: expect_status(f"{api}/api/v1/tags", 401),
        ),
        ("GET /api/v1/tags with the key: a page", keyed_read),
    ]


def run_check(check: Callable[[], None], deadline: float) -> None:
    """Run `check`, again after a pause while it fails before `deadline` (pods still starting)."""
    while True:
        try:
            check()
            return
        except (SmokeError, OSError):
            if time.monotonic() >= deadline:
                raise
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    """Run every check against the given URLs; 0 when all passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True, help="base URL of the HTTP API")
    parser.add_argument("--ops", help="base URL of /healthz and /readyz (default: --api)")
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds a failing check is retried"
    )
    args = parser.parse_args(argv)
    key = os.environ.get(KEY_VARIABLE, "")
    if not key:
        print(f"smoke: set {KEY_VARIABLE} to an API key", file=sys.stderr)
        return 1
    api = args.api.rstrip("/")
    ops = (args.ops or args.api).rstrip("/")
    deadline = time.monotonic() + args.wait
    failed = 0
    for name, check in checks(api, ops, key):
        try:
            run_check(check, deadline)
        except (SmokeError, OSError) as exc:
            failed += 1
            print(f"FAIL {name}: {exc}")
        else:
            print(f"ok   {name}")
    print(f"smoke: {failed} of {len(checks(api, ops, key))} checks failed against {api}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
