#!/bin/sh
# Prepare a fresh data directory from a base backup, to replay the WAL archive up to a
# target time (or to the archive's end without one) and then promote. Start PostgreSQL on
# DATA_DIR afterwards, as the user that owns it; it recovers, then accepts writes on a new
# timeline (whose WAL never collides with the old server's in a shared archive).
set -eu

if [ "$#" -lt 3 ] || [ "$#" -gt 4 ]; then
    echo "usage: $0 BACKUP_DIR DATA_DIR ARCHIVE_DIR [TARGET_TIME]" >&2
    echo "  TARGET_TIME: a timestamp with a zone, e.g. '2026-11-26 14:03:00+00'" >&2
    exit 2
fi
backup=$1
data=$2
archive=$3
target=${4:-}

if [ -e "$data" ] && [ -n "$(ls -A "$data")" ]; then
    echo "restore-pitr: $data is not empty; restore into a fresh directory" >&2
    exit 1
fi
if [ ! -f "$backup/backup_label" ]; then
    echo "restore-pitr: $backup is not a plain-format base backup (no backup_label)" >&2
    exit 1
fi

mkdir -p "$data"
cp -a "$backup/." "$data/"
chmod 700 "$data"
# The manifest describes the backup, not the server it becomes.
rm -f "$data/backup_manifest"

{
    echo "# Point-in-time recovery, written by restore-pitr.sh"
    echo "restore_command = 'cp \"$archive/%f\" \"%p\"'"
    if [ -n "$target" ]; then
        echo "recovery_target_time = '$target'"
    fi
    echo "recovery_target_action = 'promote'"
} >>"$data/postgresql.auto.conf"
touch "$data/recovery.signal"
