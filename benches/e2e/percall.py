#!/usr/bin/env python3
"""Per-call wall time of `walarch wal-push` and `wal-fetch` on real WAL segments, local repository.

usage: percall.py WALARCH_BIN SEGMENT_DIR [ROUNDS]
Each round pushes every segment into a fresh repository (so every call does real work), then
fetches every segment back to a file. `cp` to the same file system is measured as the floor.
Before each `cp` and `wal-fetch` the destination is removed, as PostgreSQL removes `%p` before it
runs restore_command (xlogarchive.c, RestoreArchivedFile): writing over an existing 16 MiB file
makes ext4 flush it on the rename or close (auto_da_alloc), which no real call pays.
Prints median, min and max per operation in milliseconds, and the stored/original ratio.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

def timed(cmd, fresh=None):
    if fresh and os.path.exists(fresh):
        os.unlink(fresh)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000

def main():
    walarch, segdir = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    segments = sorted(os.path.join(segdir, f) for f in os.listdir(segdir))
    samples = {"cp": [], "wal-push": [], "wal-fetch": []}
    stored = original = 0
    for _ in range(rounds):
        work = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(segdir)))
        repo, out = os.path.join(work, "repo"), os.path.join(work, "out")
        os.mkdir(out)
        for seg in segments:
            samples["cp"].append(timed(["cp", seg, os.path.join(out, "cp.tmp")], os.path.join(out, "cp.tmp")))
            samples["wal-push"].append(timed([walarch, "--repo", repo, "wal-push", seg]))
        for seg in segments:
            dest = os.path.join(out, "RECOVERYXLOG")
            samples["wal-fetch"].append(timed([walarch, "--repo", repo, "wal-fetch", os.path.basename(seg), dest], dest))
        stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(repo, "wal")) for f in fs)
        original = sum(os.path.getsize(s) for s in segments)
        shutil.rmtree(work)
    print(f"{len(segments)} segments x {rounds} rounds, {original / len(segments) / 2**20:.0f} MiB each")
    print("| operation | median ms | min | max | calls |")
    print("|---|---|---|---|---|")
    for op, xs in samples.items():
        print(f"| {op} | {statistics.median(xs):.1f} | {min(xs):.1f} | {max(xs):.1f} | {len(xs)} |")
    print(f"stored/original: {stored / original:.3f} ({stored / 2**20:.1f} MiB of {original / 2**20:.0f} MiB)")

main()
