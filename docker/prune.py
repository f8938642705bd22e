"""Delete from an installed environment the files docker/prune.txt lists.

Run in the images' builder stage with the environment's own interpreter:
`/opt/plantwire/bin/python docker/prune.py docker/prune.txt`. tests/ship/test_images.py imports
it to compute the same set of files without deleting anything.
"""

import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rules:
    """Glob patterns relative to site-packages: what to delete, and what to keep regardless."""

    delete: tuple[str, ...]
    keep: tuple[str, ...]


def read_rules(path: Path) -> Rules:
    """The patterns of a prune list; `#` starts a comment line, `!` marks a pattern to keep."""
    delete: list[str] = []
    keep: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            keep.append(line[1:])
        else:
            delete.append(line)
    return Rules(tuple(delete), tuple(keep))


def _files(site: Path, pattern: str) -> set[Path]:
    """Files a pattern names under site: matched files, and every file in matched folders."""
    found: set[Path] = set()
    for match in site.glob(pattern):
        if match.is_dir():
            found.update(path for path in match.rglob("*") if path.is_file())
        elif match.is_file():
            found.add(match)
    return found


def _bytecode(module: Path) -> set[Path]:
    """The cached bytecode files of a source module, for any interpreter and optimisation."""
    return set(module.parent.glob(f"__pycache__/{module.stem}.*.pyc"))


def matches(site: Path, pattern: str) -> bool:
    """Whether a pattern names anything under site."""
    return any(True for _ in site.glob(pattern))


def doomed(site: Path, rules: Rules) -> set[Path]:
    """The files under site that pruning deletes."""
    kept: set[Path] = set()
    for pattern in rules.keep:
        kept |= _files(site, pattern)
    files: set[Path] = set()
    for pattern in rules.delete:
        files |= _files(site, pattern)
    files -= kept
    for module in [path for path in files if path.suffix == ".py"]:
        files |= _bytecode(module) - kept
    return files


def prune(site: Path, rules: Rules) -> tuple[int, int]:
    """Delete the doomed files and the folders left empty; return the files and bytes removed."""
    files = doomed(site, rules)
    removed = 0
    folders: set[Path] = set()
    for path in files:
        removed += path.stat().st_size
        path.unlink()
        folders.update(parent for parent in path.parents if parent.is_relative_to(site))
    # Deepest first, so a folder whose subfolders all went is empty by the time it is reached.
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder != site and not any(folder.iterdir()):
            folder.rmdir()
    return len(files), removed


def main(argv: list[str]) -> int:
    """Prune the running interpreter's site-packages (or the folder given) by a prune list."""
    if len(argv) not in (2, 3):
        print(f"usage: {argv[0]} PRUNE_LIST [SITE_PACKAGES]", file=sys.stderr)
        return 2
    rules = read_rules(Path(argv[1]))
    site = Path(argv[2]) if len(argv) == 3 else Path(sysconfig.get_path("purelib"))
    count, size = prune(site, rules)
    print(f"pruned {count} files, {size / 1e6:.1f} MB, from {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
