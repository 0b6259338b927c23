#!/usr/bin/env python3
"""Wall time of PostgreSQL's archive_command call for a segment the push-ahead worker already
stored (the fast path), against a local repository.

usage: fastpath.py WALARCH_BIN SEGMENT_DIR [ROUNDS]
Builds a pg_wal layout from the segments (all queued .ready), lets one push-ahead worker store
them, then times `walarch wal-push pg_wal/<segment>` for each, as the archiver would call it.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

def main():
    walarch, segdir = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    samples = []
    for _ in range(rounds):
        work = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(segdir)))
        pg_wal, repo = os.path.join(work, "pg_wal"), os.path.join(work, "repo")
        os.makedirs(os.path.join(pg_wal, "archive_status"))
        names = sorted(os.listdir(segdir))
        for name in names:
            shutil.copy(os.path.join(segdir, name), os.path.join(pg_wal, name))
            open(os.path.join(pg_wal, "archive_status", name + ".ready"), "w").close()
        # One call starts the worker; keep "calling" (heartbeat) until every file is recorded.
        subprocess.run([walarch, "--repo", repo, "wal-push", os.path.join(pg_wal, names[0])], check=True)
        spool = os.path.join(pg_wal, "walarch", "push")
        deadline = time.time() + 120
        while sum(1 for n in names if os.path.exists(os.path.join(spool, n + ".ok"))) < len(names) - 1:
            os.utime(os.path.join(spool, "last-call"))
            assert time.time() < deadline, "worker did not finish"
            time.sleep(0.05)
        for name in names[1:]:
            t0 = time.perf_counter()
            subprocess.run([walarch, "--repo", repo, "wal-push", os.path.join(pg_wal, name)], check=True)
            samples.append((time.perf_counter() - t0) * 1000)
        shutil.rmtree(work)
    print(f"fast-path wal-push: median {statistics.median(samples):.2f} ms, min {min(samples):.2f}, "
          f"max {max(samples):.2f}, {len(samples)} calls")

main()
