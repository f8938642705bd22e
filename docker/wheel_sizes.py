"""Compare the musllinux wheels the images install with the manylinux ones a glibc venv has.

tests/ship/test_images.py estimates an image from the development venv, which holds manylinux
(glibc) wheels, while the Alpine images install musllinux ones. This downloads both kinds of
every compiled package of the given lock files, for x86_64 and aarch64, with pip and the locks'
hashes, and prints each one's unpacked size after docker/prune.txt. Needs the package index;
docs/images.md says when to run it:

    .venv/bin/python docker/wheel_sizes.py requirements/collector.txt requirements/agent.txt
"""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.utils import parse_wheel_filename
from prune import Rules, doomed, read_rules

ARCHES = ("x86_64", "aarch64")
# Newest tag first; pip does not widen --platform to older tags by itself.
KINDS = {
    "musl": ("musllinux_1_2_{arch}", "musllinux_1_1_{arch}"),
    "glibc": (
        "manylinux_2_36_{arch}",
        "manylinux_2_28_{arch}",
        "manylinux_2_17_{arch}",
        "manylinux2014_{arch}",
    ),
}


def download(lock: Path, kind: str, arch: str, into: Path) -> list[Path]:
    """The wheels of every pin of a lock for one platform, checked against the lock's hashes."""
    platforms = [arg for tag in KINDS[kind] for arg in ("--platform", tag.format(arch=arch))]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
    command += [*platforms, "--require-hashes", "-r", str(lock), "-d", str(into)]
    subprocess.run(command, check=True, timeout=900)  # noqa: S603 - pip with a fixed argv
    return sorted(into.glob("*.whl"))


def pruned_size(wheel: Path, rules: Rules, scratch: Path) -> int:
    """Bytes a wheel installs (bytecode aside) once the prune list has run."""
    target = scratch / wheel.stem
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    files = [path for path in target.rglob("*") if path.is_file()]
    gone = doomed(target, rules)
    return sum(path.stat().st_size for path in files if path not in gone)


def main(locks: list[str]) -> int:
    """Print each compiled package's size per platform and the musl excess to record."""
    rules = read_rules(Path(__file__).with_name("prune.txt"))
    sizes: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for lock in locks:
            for kind in KINDS:
                for arch in ARCHES:
                    into = Path(tmp) / f"{Path(lock).stem}-{kind}-{arch}"
                    for wheel in download(Path(lock), kind, arch, into):
                        name, version, _, tags = parse_wheel_filename(wheel.name)
                        if all(tag.platform == "any" for tag in tags):
                            continue
                        size = pruned_size(wheel, rules, Path(tmp) / "unpacked")
                        sizes.setdefault(f"{name}=={version}", {})[f"{kind}-{arch}"] = size
    columns = [f"{kind}-{arch}" for arch in ARCHES for kind in KINDS]
    print(f"{'package':32}" + "".join(f"{column:>15}" for column in columns) + f"{'excess':>12}")
    excess: dict[str, int] = {}
    for pin, by_platform in sorted(sizes.items()):
        extra = max(by_platform[f"musl-{a}"] - by_platform[f"glibc-{a}"] for a in ARCHES)
        excess[pin] = max(extra, 0)
        row = "".join(f"{by_platform[column]:>15,}" for column in columns)
        print(f"{pin:32}{row}{excess[pin]:>12,}")
    print("\nMUSL_EXCESS_BYTES = {")
    for pin, extra in excess.items():
        print(f'    "{pin}": {extra},')
    print("}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
