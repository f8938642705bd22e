"""plantwire-collector's own process: migrate from a config file, run until SIGTERM."""

import os
import signal
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest

from collector.cli import main
from collector.migrate import available_migrations
from tests.servers import MosquittoServer, free_port

pytestmark = pytest.mark.integration


def test_migrate_takes_the_database_url_from_the_config_file(
    postgres_fresh_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(f"database: {{url: '{postgres_fresh_url}'}}\nmqtt: {{url: 'mqtt://h:1883'}}\n")
    assert main(["migrate", "--config", str(path)]) == 0
    versions = [migration.version for migration in available_migrations()]
    assert capsys.readouterr().out == f"applied migrations: {versions}\n"
    with psycopg.connect(postgres_fresh_url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [row[0] for row in rows] == versions


def terminate_once_listening(port: int, stop: threading.Event, timeout: float) -> None:
    """SIGTERM this process once something accepts connections on `port`.

    Handlers are in place by then: aiohttp installs them before its sites listen.
    """
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                os.kill(os.getpid(), signal.SIGTERM)
                return
        except OSError:
            stop.wait(0.05)


def test_run_serves_until_sigterm_then_exits_cleanly(
    database_url: str,
    mosquitto: MosquittoServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    path = tmp_path / "collector.yaml"
    path.write_text(
        f"database: {{url: '{database_url}'}}\n"
        f"mqtt: {{url: '{mosquitto.url}', topic_prefix: sigterm-{port}}}\n"
        f"http: {{host: 127.0.0.1, port: {port}}}\n"
        "collector: {log_level: WARNING}\n"
    )
    stop = threading.Event()
    watcher = threading.Thread(target=terminate_once_listening, args=(port, stop, 60.0))
    watcher.start()
    try:
        status = main(["run", "--config", str(path)])
    finally:
        stop.set()  # if it never listened, no signal may arrive after it returned
        watcher.join(timeout=5)
    assert status == 0, capsys.readouterr().err
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass  # it no longer listens
