"""Real PostgreSQL, Mosquitto and Redis servers from Debian's packages, on free ports."""

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port} after {timeout}s") from None
            time.sleep(0.05)


def _postgres_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries not found: install Debian's `postgresql` package"
        )
    return candidates[-1].parent


def end_process(process: subprocess.Popen[bytes] | None, grace_s: float = 10) -> None:
    """Terminate a server process, SIGKILL it if it is still there after `grace_s`."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)


class PostgresServer:
    """A throwaway PostgreSQL cluster; as root it runs as the `postgres` user.

    Given a `primary`, it is a streaming replica of it, copied with pg_basebackup.
    """

    def __init__(
        self,
        options: str = " -c fsync=off -c full_page_writes=off",
        primary: "PostgresServer | None" = None,
    ) -> None:
        self.options = options
        self.primary = primary
        self.bin = _postgres_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="plantwire-pg-"))
        self.data = self.root / "data"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a command as the user that owns the cluster, in its root directory."""
        command = list(args)
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, check=True, capture_output=True, text=True, cwd=self.root, timeout=timeout
        )

    def pid(self) -> int:
        """Process id of the postmaster."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres") -> str:
        """libpq URL of a database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster if needed and start the server."""
        if not self.data.exists() and self.primary is not None:
            self.run(
                str(self.bin / "pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres"),
                *("-D", str(self.data), "-R", "-X", "stream", "-c", "fast", "--no-sync"),
            )
        if not self.data.exists():
            self.run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            f" -c max_connections=200{self.options}"
        )
        self.run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode: smart, fast or immediate)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop and delete the cluster."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class MosquittoServer:
    """A Mosquitto broker on a free port, with Nagle's algorithm off."""

    def __init__(self, port: int | None = None, config: str | None = None) -> None:
        self._config = config
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(self.binary).exists():
            raise RuntimeError("mosquitto not found: install Debian's `mosquitto` package")
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="plantwire-mqtt-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """Process id of the running broker."""
        assert self.process is not None, "start() first"
        return self.process.pid

    @property
    def url(self) -> str:
        """mqtt:// URL of the broker."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Write the config and start the broker; return once it accepts connections."""
        config = self.root / "mosquitto.conf"
        if self._config is not None:
            config.write_text(
                f"user {getpass.getuser()}\n{self._config}\n"
                f"log_dest file {self.root / 'mosquitto.log'}\n"
            )
            self.process = subprocess.Popen([self.binary, "-c", str(config)])
            wait_for_port(self.port)
            return
        config.write_text(
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            "max_inflight_messages 1000\n"
            "max_queued_messages 100000\n"
            "max_packet_size 67108864\n"
            "persistence false\n"
            f"log_dest file {self.root / 'mosquitto.log'}\n"
        )
        self.process = subprocess.Popen([self.binary, "-c", str(config)])
        wait_for_port(self.port)

    def kill(self) -> None:
        """SIGKILL the broker."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """Stop the broker and remove its files."""
        end_process(self.process)
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started PostgreSQL server, removed afterwards."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextlib.contextmanager
def running_mosquitto() -> Iterator[MosquittoServer]:
    """A started Mosquitto broker, stopped afterwards."""
    server = MosquittoServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


class RedisServer:
    """A Redis server on a free port, keeping nothing on disk; stop and start it at will."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(self.binary).exists():
            raise RuntimeError("redis-server not found: install Debian's `redis-server` package")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="plantwire-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server; return once it accepts connections."""
        self.process = subprocess.Popen(
            [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.root)),
                *("--logfile", str(self.root / "redis.log")),
            ]
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop the server (its counts are gone)."""
        end_process(self.process)
        self.process = None


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started Redis server, removed afterwards."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


class PrometheusServer:
    """A Prometheus server (Debian's `prometheus`) on a free port, storing in a temp dir.

    `scrape` maps job names to host:port targets, scraped every `interval` seconds;
    `rule_files` are loaded and evaluated at the same interval.
    """

    def __init__(
        self, scrape: dict[str, list[str]], rule_files: list[Path], interval: float = 1.0
    ) -> None:
        self.binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(self.binary).exists():
            raise RuntimeError("prometheus not found: install Debian's `prometheus` package")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="plantwire-prom-"))
        self._scrape = scrape
        self._rule_files = rule_files
        self._interval = interval
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Write the config and start the server; return once it accepts connections."""
        every = f"{self._interval:g}s"
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: {targets!r}\n"
            for job, targets in self._scrape.items()
        )
        rules = "".join(f"  - {path}\n" for path in self._rule_files)
        config = self.root / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {every}\n  scrape_timeout: {every}\n"
            f"  evaluation_interval: {every}\nrule_files:\n{rules}scrape_configs:\n{jobs}"
        )
        log = (self.root / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def log(self) -> str:
        """What the server logged so far."""
        path = self.root / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the server (SIGKILL after 10 s)."""
        end_process(self.process)
        self.process = None


@contextlib.contextmanager
def running_prometheus(
    scrape: dict[str, list[str]], rule_files: list[Path], interval: float = 1.0
) -> Iterator[PrometheusServer]:
    """A started Prometheus server, stopped and removed afterwards."""
    server = PrometheusServer(scrape, rule_files, interval)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
