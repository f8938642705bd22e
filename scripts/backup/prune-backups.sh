#!/bin/sh
# Retention: keep the newest KEEP base backups in BACKUP_ROOT and delete older ones, then
# delete archived WAL that only the deleted backups needed. Point-in-time recovery is then
# possible back to the oldest kept backup's end, and no further.
# pg_archivecleanup (PostgreSQL's bin directory) must be on PATH.
set -eu

if [ "$#" -ne 3 ]; then
    echo "usage: $0 BACKUP_ROOT ARCHIVE_DIR KEEP" >&2
    exit 2
fi
root=$1
archive=$2
keep=$3

case "$keep" in
    '' | *[!0-9]* | 0)
        echo "prune-backups: KEEP must be a whole number of at least 1, got '$keep'" >&2
        exit 2
        ;;
esac

# Backup directories are named by UTC time, so name order is age order.
backups=$(find "$root" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*Z' | sort)
count=$(printf '%s\n' "$backups" | grep -c . || true)
if [ "$count" -eq 0 ]; then
    echo "prune-backups: no base backup in $root; nothing pruned" >&2
    exit 1
fi
drop=$((count > keep ? count - keep : 0))
printf '%s\n' "$backups" | head -n "$drop" | while read -r old; do
    rm -rf "$old"
    echo "deleted base backup $old"
done

oldest=$(printf '%s\n' "$backups" | tail -n +"$((drop + 1))" | head -n 1)
# "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)": every segment before that
# file is older than every kept backup.
first_wal=$(sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]\{24\}\))$/\1/p' "$oldest/backup_label")
if [ -z "$first_wal" ]; then
    echo "prune-backups: no START WAL LOCATION in $oldest/backup_label" >&2
    exit 1
fi
pg_archivecleanup "$archive" "$first_wal"
echo "kept $((count - drop)) base backup(s); archive starts at $first_wal"
