"""plantwire-collector run refuses to start on ports it cannot have."""

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.cli import main


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize("ops", [False, True])
def test_run_says_which_port_it_cannot_listen_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], taken_port: int, ops: bool
) -> None:
    with socket.socket() as spare:  # a free port for the other listener
        spare.bind(("127.0.0.1", 0))
        free = spare.getsockname()[1]
    ports = f"port: {free}, ops_port: {taken_port}" if ops else f"port: {taken_port}"
    path = tmp_path / "collector.yaml"
    # Nothing is contacted: the ports are taken before the database or the broker.
    path.write_text(
        "database: {url: 'postgresql://nobody@127.0.0.1:1/none'}\n"
        "mqtt: {url: 'mqtt://127.0.0.1:1'}\n"
        f"http: {{host: 127.0.0.1, {ports}}}\n"
    )
    assert main(["run", "--config", str(path)]) == 1
    listed = f"{free}, {taken_port}" if ops else str(taken_port)
    assert capsys.readouterr().err == (
        f"plantwire-collector: http: cannot listen on 127.0.0.1 port(s) {listed}:"
        " Address already in use\n"
    )


def test_run_returns_0_once_the_app_has_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[int] = []

    def run_app(app: object, *, sock: list[socket.socket], **_: object) -> None:
        served.extend(s.getsockname()[1] for s in sock)  # serves, then stops (SIGTERM)
        for listener in sock:
            listener.close()

    monkeypatch.setattr("collector.cli.web.run_app", run_app)
    path = tmp_path / "collector.yaml"
    path.write_text(
        "database: {url: 'postgresql://nobody@127.0.0.1:1/none'}\n"
        "mqtt: {url: 'mqtt://127.0.0.1:1'}\n"
        "http: {host: 127.0.0.1, port: 0}\n"
    )
    assert main(["run", "--config", str(path)]) == 0
    assert len(served) == 1
