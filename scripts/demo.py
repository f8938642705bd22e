"""Run the whole pipeline on this machine: simulator, broker, PostgreSQL, collector and agent.

With PLANTWIRE_MQTT_URL unset an embedded broker (amqtt) is started; with
PLANTWIRE_DATABASE_URL unset an embedded PostgreSQL (pgserver). Ctrl-C stops everything.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".demo"
BIN = Path(sys.executable).parent
HTTP_PORT = 8080
SIM_PORTS = {"opcua": 4840, "modbus": 5020}
BROKER_PORT = 1883
AGENT_HTTP_PORT = 9108  # the agent's /metrics and /healthz (config/agent.yaml's default)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_port(port: int, timeout: float, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"demo: {name} exited with status {process.returncode}; see {STATE}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"demo: {name} did not open port {port} within {timeout:.0f}s")


def fetch(url: str, key: str, put: Any = None) -> tuple[int, Any]:
    """GET a URL of the demo's collector, or PUT `put` to it as JSON."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"demo: refusing to fetch {url}")  # only the demo's own collector
    headers = {"Authorization": f"Bearer {key}"}
    body = None
    if put is not None:
        body, headers["Content-Type"] = json.dumps(put, default=str).encode(), "application/json"
    request = urllib.request.Request(  # noqa: S310 - checked above
        url, data=body, headers=headers, method="GET" if put is None else "PUT"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - checked above
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError):
        return 0, None


class Demo:
    """Starts the parts in order and stops them in reverse order."""

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.pg: Any = None
        self.key = ""
        self.viewer_key = ""

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(STATE / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        print(f"demo: starting {name} (log: .demo/{name}.log)", flush=True)
        # A new session, so Ctrl-C reaches only this script, which then stops children in order.
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
        self.processes.append((name, process))
        return process

    def start(self) -> str:
        STATE.mkdir(exist_ok=True)
        env = dict(os.environ)
        busy = [p for p in (HTTP_PORT, AGENT_HTTP_PORT, *SIM_PORTS.values()) if not port_free(p)]
        if busy:
            raise SystemExit(f"demo: ports {busy} are in use; stop what uses them and retry")
        if "PLANTWIRE_DATABASE_URL" not in env:
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import pgserver

            print("demo: starting embedded PostgreSQL (pgserver) in .demo/pgdata", flush=True)
            self.pg = pgserver.get_server(STATE / "pgdata", cleanup_mode="stop")
            env["PLANTWIRE_DATABASE_URL"] = self.pg.get_uri()
        if "PLANTWIRE_MQTT_URL" not in env:
            if not port_free(BROKER_PORT):
                raise SystemExit(f"demo: port {BROKER_PORT} is in use; set PLANTWIRE_MQTT_URL")
            config = STATE / "broker.yaml"
            config.write_text(
                "listeners:\n  default:\n    type: tcp\n"
                f"    bind: 127.0.0.1:{BROKER_PORT}\n"
                "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                "    allow_anonymous: true\n"
            )
            broker = self.spawn("broker", [str(BIN / "amqtt"), "-c", str(config)], env)
            wait_port(BROKER_PORT, 30, broker, "broker")
            env["PLANTWIRE_MQTT_URL"] = f"mqtt://127.0.0.1:{BROKER_PORT}"
        env["PLANTWIRE_HTTP_PORT"] = str(HTTP_PORT)
        sim = self.spawn(
            "simulator",
            [
                str(BIN / "plantwire-sim"),
                "--opcua-port",
                str(SIM_PORTS["opcua"]),
                "--modbus-port",
                str(SIM_PORTS["modbus"]),
            ],
            env,
        )
        for port in SIM_PORTS.values():
            wait_port(port, 30, sim, "simulator")
        collector = self.spawn(
            "collector",
            [str(BIN / "plantwire-collector"), "run", "--config", "config/collector.yaml"],
            env,
        )
        wait_port(HTTP_PORT, 60, collector, "collector")
        self.key = self.new_key("demo", "admin", env)
        self.viewer_key = self.new_key("demo-viewer", "viewer", env)
        self.spawn(
            "agent", [str(BIN / "plantwire-agent"), "run", "--config", "config/agent.yaml"], env
        )
        return f"http://127.0.0.1:{HTTP_PORT}"

    def new_key(self, name: str, role: str, env: dict[str, str]) -> str:
        """A new API key made with the collector's own command."""
        made = subprocess.run(
            [
                str(BIN / "plantwire-collector"),
                *("api-key", "create", "--config", "config/collector.yaml"),
                *("--name", name, "--role", role),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return made.stdout.strip().splitlines()[-1]

    def put_equipment(self, base: str) -> None:
        """The sample equipment model (config/equipment.yaml) through the API, its machine's
        tags pointed at the demo agent's Modbus device, so the dashboard has a machine."""
        plant = yaml.safe_load((ROOT / "config" / "equipment.yaml").read_text(encoding="utf-8"))
        for site in plant["sites"]:
            site_id, machines = site.pop("id"), site.pop("machines", [])
            status, _ = fetch(f"{base}/api/v1/equipment/sites/{site_id}", self.key, put=site)
            if status != 200:
                raise SystemExit(f"demo: the equipment API refused site {site_id}: {status}")
            for machine in machines:
                machine_id = machine.pop("id")
                for role in ("state", "reason", "good", "scrap", "product"):
                    if role in machine:
                        name = machine[role]["tag"].partition("/")[2]
                        machine[role]["tag"] = f"press-1-modbus/{name}"
                        machine[role]["agent"] = "demo-agent"
                url = f"{base}/api/v1/equipment/sites/{site_id}/machines/{machine_id}"
                if fetch(url, self.key, put=machine)[0] != 200:
                    raise SystemExit(f"demo: the equipment API refused machine {machine_id}")

    def wait_for_readings(self, base: str, timeout: float) -> None:
        wanted = ["press-1-modbus/temperature", "press-1-opcua/temperature"]
        deadline = time.monotonic() + timeout
        pending = list(wanted)
        while pending and time.monotonic() < deadline:
            for name, process in self.processes:
                if process.poll() is not None:
                    raise SystemExit(f"demo: {name} exited; see .demo/{name}.log")
            pending = [
                t
                for t in pending
                if fetch(f"{base}/api/v1/readings?tag={t}", self.key)[0] != 200
                or not fetch(f"{base}/api/v1/readings?tag={t}", self.key)[1]["count"]
            ]
            time.sleep(0.5)
        if pending:
            raise SystemExit(f"demo: no readings for {pending} within {timeout:.0f}s")
        for tag in wanted:
            body = fetch(f"{base}/api/v1/readings?tag={tag}", self.key)[1]
            last = body["readings"][-1]
            print(
                f"demo: {tag:<28} {body['count']:>4} readings, last {last['value']!r}"
                f" at {last['ts']}"
            )

    def stop(self) -> None:
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    print(f"demo: {name} did not stop in 15s; killing it", flush=True)
                    process.kill()
                    process.wait()
        self.processes.clear()
        if self.pg is not None:
            self.pg.cleanup()
            self.pg = None
        print("demo: stopped everything", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--duration",
        type=float,
        default=0,
        help="stop by itself after this many seconds (0: run until Ctrl-C)",
    )
    args = parser.parse_args()
    demo = Demo()
    started = time.monotonic()
    # Explicit handlers: a shell that starts the demo in the background ignores SIGINT for it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        base = demo.start()
        demo.put_equipment(base)
        demo.wait_for_readings(base, timeout=60)
        print(
            f"demo: readings from both protocols arrived {time.monotonic() - started:.1f}s"
            " after start. Look at:"
        )
        print(f"demo: the dashboard: {base}/ (sign in with the viewer key {demo.viewer_key})")
        print(f"demo: an admin API key for this demo: {demo.key}")
        print(f'  curl -H "Authorization: Bearer {demo.key}" \\')
        print(f"    '{base}/api/v1/readings?tag=press-1-modbus/good_count'")
        print(f"  {base}/api/v1/readings?tag=press-1-opcua/temperature (with the key)")
        print(f"  {base}/api/v1/agents (with the key)")
        print(f"  {base}/api/docs (the API's contract, readable)")
        print(f"  {base}/healthz")
        print(f"  {base}/metrics")
        print(f"  http://127.0.0.1:{AGENT_HTTP_PORT}/healthz (the agent's own)")
        print("demo: press Ctrl-C to stop", flush=True)
        while args.duration <= 0 or time.monotonic() - started < args.duration:
            for name, process in demo.processes:
                if process.poll() is not None:
                    raise SystemExit(f"demo: {name} exited; see .demo/{name}.log")
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ndemo: stopping", flush=True)
    finally:
        demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
