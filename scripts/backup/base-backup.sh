#!/bin/sh
# Take a physical base backup of a running PostgreSQL server into BACKUP_ROOT/<UTC time>/,
# then check it against its manifest. Connection from libpq's variables (PGHOST, PGPORT,
# PGUSER, PGPASSWORD or ~/.pgpass); the role needs the REPLICATION attribute.
# PostgreSQL's client programs (pg_basebackup, pg_verifybackup) must be on PATH.
# Prints the backup's directory on its last line.
set -eu

if [ "$#" -ne 1 ]; then
    echo "usage: $0 BACKUP_ROOT" >&2
    exit 2
fi
root=$1
name=$(date -u +%Y%m%dT%H%M%S%6NZ)
target="$root/$name"

mkdir -p "$root"
# Plain format, so pg_verifybackup (PostgreSQL 15) can check it and a restore is a copy.
# The WAL the backup needs to be consistent is streamed into it (-X stream): the backup
# restores even if the archive lost those segments; later WAL comes from the archive.
pg_basebackup --pgdata="$target" --format=plain --wal-method=stream \
    --checkpoint=fast --label="plantwire $name" --manifest-checksums=SHA256 --no-password
pg_verifybackup --quiet "$target"
echo "$target"
