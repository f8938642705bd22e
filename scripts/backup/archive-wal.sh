#!/bin/sh
# PostgreSQL's archive_command: copy one finished WAL segment into the archive, durably.
#   archive_command = '/path/to/archive-wal.sh /var/lib/postgresql/wal-archive %p %f'
# Exits non-zero on any failure, so PostgreSQL keeps the segment and tries again.
set -eu

if [ "$#" -ne 3 ]; then
    echo "usage: $0 ARCHIVE_DIR WAL_PATH WAL_NAME (archive_command: ... ARCHIVE_DIR %p %f)" >&2
    exit 2
fi
archive=$1
source=$2
name=$3
target="$archive/$name"

if [ -e "$target" ]; then
    # A retry after a crash between copy and acknowledgement: the same bytes are fine,
    # different bytes mean two servers archive into one place, which must stop here.
    if cmp -s "$source" "$target"; then
        exit 0
    fi
    echo "archive-wal: $target exists with different content; refusing to overwrite" >&2
    exit 1
fi

# Copied under a temporary name and flushed before the rename, so a crash never leaves a
# partial segment under its real name for a restore to replay.
partial="$archive/.$name.partial"
cp "$source" "$partial"
sync "$partial"
mv "$partial" "$target"
sync "$archive"
