#!/usr/bin/env python3
"""Writes COUNT files of 16 MiB into DIR the way walarch's fetch-ahead worker writes spooled
segments (1 MiB writes, fsync, rename into place), one every PACE seconds at most, keeping the
newest 32: the I/O a restore_command that downloads ahead puts on pg_wal's file system while
replay runs, without its CPU. Used by tool mv-staged-io (restore_with_writer.sh).

usage: io_writer.py DIR PACE [COUNT]
"""
import os, sys, time

directory, pace = sys.argv[1], float(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 64
segment = os.urandom(16 << 20)
os.makedirs(directory, exist_ok=True)
start = time.monotonic()
for i in range(count):
    temp, final = os.path.join(directory, f".{i}.tmp"), os.path.join(directory, str(i))
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for offset in range(0, len(segment), 1 << 20):
            os.write(fd, segment[offset:offset + (1 << 20)])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, final)
    if i >= 32:
        os.unlink(os.path.join(directory, str(i - 32)))
    delay = start + (i + 1) * pace - time.monotonic()
    if delay > 0:
        time.sleep(delay)
