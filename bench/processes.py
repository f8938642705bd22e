"""Child processes of a benchmark: start them, measure their CPU and memory, always stop them."""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by a process and its live descendants."""
    stats: dict[int, tuple[int, float]] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = path.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(path.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    total, family = 0.0, {root}
    for pid in sorted(stats):  # children have larger pids than their parents, nearly always
        parent, cpu = stats[pid]
        if pid == root or parent in family:
            family.add(pid)
            total += cpu
    return total


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Start sampling a Python process with py-spy into a collapsed-stack file."""
    return subprocess.Popen(
        [
            str(BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise_profile(path: Path, top: int = 12) -> list[str]:
    """The functions a collapsed-stack profile spent most samples in, by own time."""
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + int(count)
        total += int(count)
    ranked = sorted(own.items(), key=lambda item: -item[1])[:top]
    return [f"  {100 * n / total:5.1f} %  {name}" for name, n in ranked]


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class Children:
    """Every process a benchmark starts, stopped when the block ends, also on Ctrl-C or an error.

    SIGTERM is turned into SystemExit inside the block, so `kill <bench>` cleans up too.
    """

    def __init__(self, stop_timeout: float = 15.0) -> None:
        self.stop_timeout = stop_timeout
        self._running: list[subprocess.Popen[bytes]] = []
        self._previous: Any = None

    def start(self, args: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start a process that the block will stop."""
        process: subprocess.Popen[bytes] = subprocess.Popen(list(args), **popen)
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM, then SIGKILL if it has not exited within stop_timeout seconds."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=self.stop_timeout)
        with contextlib.suppress(ValueError):
            self._running.remove(process)

    def __enter__(self) -> "Children":
        self._previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            for process in reversed(list(self._running)):
                # One process that will not die must not leave the others running.
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    self.stop(process)
        finally:
            signal.signal(signal.SIGTERM, self._previous)
