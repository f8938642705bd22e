"""The backup scripts' refusals, which the point-in-time test never provokes."""

import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "backup"
SEGMENT = "000000010000000000000003"


def run(script: str, *args: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / script), *map(str, args)], capture_output=True, text=True, timeout=30
    )


def test_archive_wal_copies_once_accepts_a_retry_and_refuses_other_bytes(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    wal = tmp_path / SEGMENT
    wal.write_bytes(b"segment one")
    assert run("archive-wal.sh", archive, wal, SEGMENT).returncode == 0
    assert (archive / SEGMENT).read_bytes() == b"segment one"
    assert run("archive-wal.sh", archive, wal, SEGMENT).returncode == 0

    wal.write_bytes(b"another server's segment")
    refused = run("archive-wal.sh", archive, wal, SEGMENT)
    assert refused.returncode == 1
    assert "refusing to overwrite" in refused.stderr
    assert (archive / SEGMENT).read_bytes() == b"segment one"
    assert sorted(p.name for p in archive.iterdir()) == [SEGMENT]


def test_archive_wal_fails_when_the_archive_is_missing(tmp_path: Path) -> None:
    wal = tmp_path / SEGMENT
    wal.write_bytes(b"segment")
    assert run("archive-wal.sh", tmp_path / "not-mounted", wal, SEGMENT).returncode != 0


def test_restore_pitr_refuses_a_used_data_directory_and_a_non_backup(tmp_path: Path) -> None:
    backup, data = tmp_path / "backup", tmp_path / "data"
    backup.mkdir()
    data.mkdir()
    not_backup = run("restore-pitr.sh", backup, data, tmp_path)
    assert not_backup.returncode == 1
    assert "no backup_label" in not_backup.stderr
    (backup / "backup_label").write_text("START WAL LOCATION: 0/2000028 (file 0000000100)\n")
    (data / "PG_VERSION").write_text("15\n")
    used = run("restore-pitr.sh", backup, data, tmp_path)
    assert used.returncode == 1
    assert "is not empty" in used.stderr


def test_prune_backups_needs_a_positive_count(tmp_path: Path) -> None:
    for keep in ("0", "-1", "seven"):
        result = run("prune-backups.sh", tmp_path, tmp_path, keep)
        assert result.returncode == 2, keep
        assert "KEEP must be" in result.stderr
