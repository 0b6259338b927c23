#!/usr/bin/env python3
"""Wall time of `walarch wal-fetch` answered from the fetch-ahead spool, as recovery calls it.

usage: spooled_fetch.py WALARCH_BIN REPO FIRST_SEGMENT_HEX COUNT [ROUNDS]
REPO holds segments FIRST..FIRST+COUNT-1 of timeline 1 (e.g. pushed with `walarch wal-push`).
A fake data directory (PG_VERSION, recovery.signal, postmaster.pid naming this process) around
pg_wal; the first call starts the fetch-ahead worker; for each later segment: wait until the
worker has spooled it (not timed), remove %p as PostgreSQL does, then time the call. The worker
keeps downloading ahead meanwhile, as during recovery. SHOW=1 prints every call with its stderr
(with WALARCH_LOG=debug: the time of each phase).
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

walarch, repo, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3], 16), int(sys.argv[4])
rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
env = dict(os.environ, WALARCH_REPO=repo,
           WALARCH_LOG=os.environ.get("WALARCH_LOG", "warn"),
           WALARCH_PREFETCH_MIB=os.environ.get("WALARCH_PREFETCH_MIB", "64"))
samples = []
for _ in range(rounds):
    data = tempfile.mkdtemp(prefix="walarch-spooled-")
    pg_wal = os.path.join(data, "pg_wal")
    os.mkdir(pg_wal)
    open(os.path.join(data, "PG_VERSION"), "w").write("15\n")
    open(os.path.join(data, "recovery.signal"), "w").close()
    open(os.path.join(data, "postmaster.pid"), "w").write(f"{os.getpid()}\n{data}\n{int(time.time())}\n")
    dest, spool = os.path.join(pg_wal, "RECOVERYXLOG"), os.path.join(pg_wal, "walarch", "fetch")
    try:
        for i in range(count):
            name = "00000001%08X%08X" % (0, first + i)
            if i > 0:
                deadline = time.time() + 10
                # The sidecar marks a spooled segment (`.crc` in builds before issue 17's step 2).
                while time.time() < deadline and not any(
                        os.path.exists(os.path.join(spool, name + ext)) for ext in (".check", ".crc")):
                    time.sleep(0.002)
                time.sleep(0.05)  # let the worker's next download start, as during replay
            if os.path.exists(dest):
                os.unlink(dest)
            t0 = time.perf_counter()
            done = subprocess.run([walarch, "wal-fetch", name, dest], check=True, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            ms = (time.perf_counter() - t0) * 1000
            if i > 0:
                samples.append(ms)
                if os.environ.get("SHOW"):
                    print(f"{ms:.1f} ms", done.stderr.strip().replace("\n", " / "))
    finally:
        # Recovery is over: the worker removes the spool and exits once idle.
        os.unlink(os.path.join(data, "recovery.signal"))
        time.sleep(0.3)
        subprocess.run(["pkill", "-f", "fetch-worker " + pg_wal])
        shutil.rmtree(data)
print(f"spooled wal-fetch: median {statistics.median(samples):.1f} ms, "
      f"min {min(samples):.1f}, max {max(samples):.1f}, calls {len(samples)}")
