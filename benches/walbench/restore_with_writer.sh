#!/bin/sh
# restore_command of tool mv-staged-io: RUN/staged/%f renamed into %p as mv-staged does, and at
# the first call a background io_writer.py starts writing 64 x 16 MiB into RUN/writer at
# replay's pace (40 ms a segment, WRITER_PACE): what writing the WAL beside replay costs when it
# is spread evenly over the recovery.
# usage: restore_with_writer.sh RUN %f %p
run=$1 file=$2 dest=$3
if mkdir "$run/writer" 2>/dev/null; then
  python3 "$(dirname "$0")/io_writer.py" "$run/writer" "${WRITER_PACE:-0.040}" \
    </dev/null >/dev/null 2>"$run/writer.log" &
fi
exec mv "$run/staged/$file" "$dest"
