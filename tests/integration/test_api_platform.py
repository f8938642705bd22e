"""The API platform against a real collector and PostgreSQL: keys, roles, problems, headers."""

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from collector.cli import main as collector_main
from collector.config import CollectorConfig
from tests.harness import (
    TEST_KEY,
    add_test_key,
    collector_config,
    eventually,
    running_collector,
)
from tests.servers import (
    MosquittoServer,
    PostgresServer,
    free_port,
    wait_for_port,
)

pytestmark = pytest.mark.integration
ORIGIN = "https://dashboard.example.com"
BIN = Path(sys.executable).parent


@pytest.fixture
async def collector(plant_collector_config: Callable[..., CollectorConfig]) -> AsyncIterator[str]:
    config = plant_collector_config(
        sections={"http": {"host": "127.0.0.1", "port": free_port(), "cors_origins": [ORIGIN]}}
    )
    async with running_collector(config) as base:
        yield base


async def call(
    method: str,
    url: str,
    key: str | None = TEST_KEY,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, dict[str, str], Any]:
    """One request; status, headers and JSON body (None when the body is not JSON)."""
    sent = {"Authorization": f"Bearer {key}"} if key else {}
    sent.update(headers or {})
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=sent, **kwargs) as response,
    ):
        text = await response.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        return response.status, dict(response.headers), body


async def new_key(base: str, role: str, **extra: Any) -> dict[str, Any]:
    status, _, body = await call(
        "POST", f"{base}/api/v1/api-keys", json={"name": f"{role} key", "role": role, **extra}
    )
    assert status == 201, body
    return dict(body)


async def test_every_api_route_needs_a_valid_key_and_says_how(collector: str) -> None:
    for key, header in [(None, None), ("pwk_00000000_nope", None), ("not-a-key", None)]:
        status, headers, body = await call("GET", f"{collector}/api/v1/agents", key=key)
        assert status == 401, (key, header)
        assert headers["WWW-Authenticate"] == 'Bearer realm="plantwire"'
        assert headers["Content-Type"].startswith("application/problem+json")
        assert body["status"] == 401
        assert body["invalid_params"][0]["name"] == "Authorization"
    status, _, body = await call(
        "GET", f"{collector}/api/v1/agents", key=None, headers={"Authorization": "Basic abc"}
    )
    assert status == 401
    # X-API-Key works as well as Authorization: Bearer.
    status, _, body = await call(
        "GET", f"{collector}/api/v1/agents", key=None, headers={"X-API-Key": TEST_KEY}
    )
    assert (status, body) == (200, {"agents": [], "next": None})
    for open_path in ("/healthz", "/readyz", "/metrics", "/api/openapi.json", "/api/docs"):
        status, _, _ = await call("GET", f"{collector}{open_path}", key=None)
        assert status == 200, open_path


async def test_roles_decide_what_a_key_may_do(collector: str) -> None:
    viewer = (await new_key(collector, "viewer"))["key"]
    operator = (await new_key(collector, "operator"))["key"]
    for key in (viewer, operator):
        status, _, _ = await call("GET", f"{collector}/api/v1/agents", key=key)
        assert status == 200
        status, _, body = await call("GET", f"{collector}/api/v1/dead-letters", key=key)
        assert status == 403, body
        assert "needs the admin role" in body["detail"]
        status, _, _ = await call(
            "POST", f"{collector}/api/v1/api-keys", key=key, json={"name": "x", "role": "admin"}
        )
        assert status == 403
    status, _, _ = await call("GET", f"{collector}/api/v1/dead-letters")
    assert status == 200


async def test_keys_are_shown_once_stored_as_a_hash_and_revoked_at_once(
    collector: str, database_url: str
) -> None:
    created = await new_key(collector, "viewer")
    key, prefix = created["key"], created["prefix"]
    assert key.startswith(f"pwk_{prefix}_")
    assert len(key) > 40
    assert created["created_by"] == "key 7e57ab1e"
    assert created["active"] is True
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT key_hash FROM api_keys WHERE prefix = %s", (prefix,))
        (key_hash,) = stored.fetchone() or ("",)
    assert key not in key_hash
    assert len(key_hash) == 64
    status, _, listing = await call("GET", f"{collector}/api/v1/api-keys")
    assert status == 200
    listed = {item["prefix"]: item for item in listing["items"]}
    assert "key" not in listed[prefix]
    assert listed[prefix]["role"] == "viewer"
    assert (await call("GET", f"{collector}/api/v1/agents", key=key))[0] == 200

    status, _, revoked = await call("DELETE", f"{collector}/api/v1/api-keys/{prefix}")
    assert status == 200
    assert revoked["active"] is False
    assert revoked["revoked_at"]
    status, _, body = await call("GET", f"{collector}/api/v1/agents", key=key)
    assert status == 401
    assert "revoked or expired" in body["detail"]
    status, _, body = await call("DELETE", f"{collector}/api/v1/api-keys/00000000")
    assert status == 404
    assert body["invalid_params"][0]["name"] == "prefix"


async def test_a_key_stops_working_when_it_expires(collector: str) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    key = (await new_key(collector, "viewer", expires_at=soon))["key"]
    assert (await call("GET", f"{collector}/api/v1/agents", key=key))[0] == 200

    async def refused() -> bool:
        return (await call("GET", f"{collector}/api/v1/agents", key=key))[0] == 401

    await eventually(refused, timeout=15, what="the expired key to be refused")
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    status, _, body = await call(
        "POST",
        f"{collector}/api/v1/api-keys",
        json={"name": "x", "role": "viewer", "expires_at": past},
    )
    assert status == 422
    assert body["invalid_params"][0]["name"] == "expires_at"


async def test_errors_are_problems_naming_what_is_wrong(collector: str) -> None:
    cases: list[tuple[str, str, dict[str, Any], int, str | None]] = [
        ("GET", "/api/v1/nothing-here", {}, 404, None),
        ("PUT", "/api/v1/agents", {}, 405, None),
        ("GET", "/api/v1/agents?colour=red", {}, 400, "colour"),
        ("GET", "/api/v1/agents?limit=1&limit=2", {}, 400, "limit"),
        ("GET", "/api/v1/agents/bad%20name", {}, 400, "agent_id"),
        ("GET", "/api/v1/dead-letters/0", {}, 400, "id"),
        ("GET", "/api/v1/dead-letters?kind=poem", {}, 400, "kind"),
        ("GET", f"/api/v1/agents?x={'y' * 5000}", {}, 414, "query"),
        ("POST", "/api/v1/api-keys", {"data": "x" * 70_000}, 413, None),
        ("POST", "/api/v1/api-keys", {"data": "{}"}, 415, "Content-Type"),
        ("POST", "/api/v1/api-keys", {"json": {"name": "x"}}, 400, "role"),
        ("POST", "/api/v1/api-keys", {"json": {"name": "x", "role": "god"}}, 400, "role"),
        ("POST", "/api/v1/api-keys", {"json": {"name": "x", "role": "viewer", "x": 1}}, 400, "x"),
    ]
    for method, path, kwargs, status, name in cases:
        got, headers, body = await call(method, f"{collector}{path}", **kwargs)
        assert got == status, (method, path, body)
        assert headers["Content-Type"].startswith("application/problem+json"), path
        assert body["status"] == status
        assert body["title"]
        assert "Traceback" not in body["detail"]
        if name is not None:
            assert body["invalid_params"][0]["name"] == name, (path, body)
        if status == 405:
            assert "GET" in headers["Allow"]


async def test_every_answer_carries_the_security_headers(collector: str) -> None:
    for path, key in [
        ("/api/v1/agents", TEST_KEY),
        ("/api/v1/agents", None),
        ("/api/v1/missing", TEST_KEY),
        ("/healthz", None),
        ("/api/openapi.json", None),
    ]:
        _, headers, _ = await call("GET", f"{collector}{path}", key=key)
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "no-referrer", path
        assert "default-src 'none'" in headers["Content-Security-Policy"], path
        assert headers["Cache-Control"] == "no-store", path
    _, headers, _ = await call("GET", f"{collector}/api/docs", key=None)
    assert (
        "unsafe-inline"
        not in headers["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    )


async def test_cors_only_for_configured_origins(collector: str) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    status, headers, _ = await call(
        "OPTIONS", f"{collector}/api/v1/agents", key=None, headers=preflight
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    _, headers, _ = await call("GET", f"{collector}/api/v1/agents", headers={"Origin": ORIGIN})
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    stranger = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    status, headers, _ = await call(
        "OPTIONS", f"{collector}/api/v1/agents", key=None, headers=stranger
    )
    assert status == 405
    assert "Access-Control-Allow-Origin" not in headers
    _, headers, _ = await call(
        "GET", f"{collector}/api/v1/agents", headers={"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers


async def test_the_contract_is_openapi_3_1_with_roles_and_a_docs_page(collector: str) -> None:
    status, _, contract = await call("GET", f"{collector}/api/openapi.json", key=None)
    assert status == 200
    assert contract["openapi"] == "3.1.0"
    operations = [
        (path, method, op)
        for path, item in contract["paths"].items()
        for method, op in item.items()
    ]
    assert {path for path, _, _ in operations} >= {
        "/api/v1/readings",
        "/api/v1/agents",
        "/api/v1/agents/{agent_id}",
        "/api/v1/dead-letters",
        "/api/v1/dead-letters/{id}",
        "/api/v1/api-keys",
        "/api/v1/api-keys/{prefix}",
    }
    for path, method, op in operations:
        assert op["x-required-role"] in ("viewer", "operator", "admin"), (path, method)
        assert op["security"], path
        assert {"400", "401", "403", "429", "500", "503"} <= set(op["responses"]), path
    status, headers, _ = await call("GET", f"{collector}/api/docs", key=None)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    for asset in ("/api/docs/start.js", "/api/docs/static/swagger-ui-bundle.js"):
        assert (await call("GET", f"{collector}{asset}", key=None))[0] == 200, asset
    assert (await call("GET", f"{collector}/api/docs/static/..%2Fcore.py", key=None))[0] == 404


def test_api_keys_from_the_command_line(
    database_url: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text(f"database:\n  url: {database_url}\nmqtt:\n  url: mqtt://127.0.0.1:1\n")
    argv = ["api-key", "create", "--config", str(config), "--name", "ops", "--role", "admin"]
    assert collector_main(argv) == 0
    out = capsys.readouterr().out
    key = out.strip().splitlines()[-1]
    prefix = key.split("_")[1]
    assert f"created admin key {prefix} (ops)" in out
    assert collector_main(["api-key", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert prefix in listing
    assert key not in listing
    assert "tests" in listing
    assert collector_main(["api-key", "revoke", "--config", str(config), prefix]) == 0
    assert collector_main(["api-key", "revoke", "--config", str(config), "ffffffff"]) == 1
    assert collector_main(["api-key", "list", "--config", str(config)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(prefix))
    assert " no " in f" {row} "
    with pytest.raises(SystemExit):
        collector_main(
            ["api-key", "create", "--config", str(config), "--name", "x", "--role", "root"]
        )


async def test_the_api_answers_503_while_postgresql_is_down_and_recovers(
    own_postgres: PostgresServer, mosquitto: MosquittoServer, topic_prefix: str
) -> None:
    config = collector_config(
        database_url=own_postgres.url(),
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
    )
    async with running_collector(config) as base:
        with psycopg.connect(own_postgres.url(), autocommit=True) as conn:
            add_test_key(conn)
        assert (await call("GET", f"{base}/api/v1/agents"))[0] == 200
        await asyncio.to_thread(own_postgres.stop, "immediate")
        try:
            status, headers, body = await call("GET", f"{base}/api/v1/agents")
            assert status == 503
            assert body["status"] == 503
            assert headers["Retry-After"]
            assert (await call("GET", f"{base}/readyz", key=None))[0] == 503
        finally:
            await asyncio.to_thread(own_postgres.start)

        async def serving() -> bool:
            ready = (await call("GET", f"{base}/readyz", key=None))[0] == 200
            return ready and (await call("GET", f"{base}/api/v1/agents"))[0] == 200

        await eventually(serving, timeout=30, what="the API to serve again")


async def test_the_roadmap_metrics_are_exported(collector: str) -> None:
    await call("GET", f"{collector}/api/v1/agents")
    await call("GET", f"{collector}/api/v1/agents/nobody")
    await call("GET", f"{collector}/api/v1/nowhere")
    _, _, _ = await call("GET", f"{collector}/healthz", key=None)
    async with aiohttp.ClientSession() as session, session.get(f"{collector}/metrics") as response:
        text = await response.text()
    assert 'http_requests_total{method="GET",route="/api/v1/agents",status="200"} 1.0' in text
    assert (
        'http_requests_total{method="GET",route="/api/v1/agents/{agent_id}",status="404"} 1.0'
        in text
    )
    assert 'http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert (
        'http_request_duration_seconds_bucket{le="0.05",method="GET",route="/api/v1/agents"' in text
    )
    assert "active_users 1.0" in text
    assert 'db_connection_pool_size{state="max"} 4.0' in text
    assert 'db_connection_pool_size{state="idle"}' in text
    assert 'db_query_duration_seconds_count{query_type="select"}' in text


async def test_operations_endpoints_can_have_a_port_of_their_own(
    database_url: str, mosquitto: MosquittoServer, topic_prefix: str, tmp_path: Any
) -> None:
    port, ops_port = free_port(), free_port()
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"database:\n  url: {database_url}\n"
        f"mqtt:\n  url: {mosquitto.url}\n  topic_prefix: {topic_prefix}\n"
        f"http:\n  host: 127.0.0.1\n  port: {port}\n  ops_port: {ops_port}\n"
    )
    with (tmp_path / "collector.log").open("wb") as log:
        process = await asyncio.to_thread(
            subprocess.Popen,
            [str(BIN / "plantwire-collector"), "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await asyncio.to_thread(wait_for_port, ops_port, 60)
        api, ops = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}"

        async def ready() -> bool:
            return (await call("GET", f"{ops}/readyz", key=None))[0] == 200

        await eventually(ready, timeout=30, what="the collector to be ready")
        for path in ("/healthz", "/metrics"):
            assert (await call("GET", f"{ops}{path}", key=None))[0] == 200
            status, headers, _ = await call("GET", f"{api}{path}", key=None)
            assert status == 404
            assert headers["Content-Type"].startswith("application/problem+json")
        assert (await call("GET", f"{api}/api/v1/agents"))[0] == 200
        assert (await call("GET", f"{ops}/api/v1/agents"))[0] == 404
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 15)
    # A port already taken is a clear error, not a traceback.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        config.write_text(config.read_text().replace(f"ops_port: {ops_port}", f"ops_port: {busy}"))
        done = await asyncio.to_thread(
            subprocess.run,
            [str(BIN / "plantwire-collector"), "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1 port(s) {port}, {busy}" in done.stderr
    assert "Traceback" not in done.stderr


async def test_agents_are_listed_a_page_at_a_time(collector: str, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for agent in ("line3", "line1", "line2"):
            conn.execute("INSERT INTO agents (agent_id) VALUES (%s)", (agent,))
    status, _, first = await call("GET", f"{collector}/api/v1/agents?limit=2")
    assert status == 200
    assert [agent["agent"] for agent in first["agents"]] == ["line1", "line2"]
    _, _, second = await call("GET", f"{collector}{first['next']}")
    assert [agent["agent"] for agent in second["agents"]] == ["line3"]
    assert second["next"] is None
    status, _, problem = await call("GET", f"{collector}/api/v1/agents?cursor=bm9wZQ")
    assert status == 400
    assert problem["invalid_params"][0]["name"] == "cursor"
