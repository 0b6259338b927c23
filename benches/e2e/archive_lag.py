#!/usr/bin/env python3
"""Archive lag while a base backup runs at full speed: does WAL archiving stay ahead?

usage: archive_lag.py WALARCH_BIN WORKDIR [SCALE] [ROUNDS]

A PostgreSQL 15 cluster (pgbench scale SCALE, default 60, ~0.9 GB) archives through walarch
into a local repository while pgbench writes (4 clients). For each round, a `walarch backup`
runs with WAL priority (the default: its upload pauses while finished segments wait) and with
`--no-wal-priority`, alternating; every 50 ms the number of finished segments waiting for
archive_command (`pg_wal/archive_status/*.ready`) is sampled. Prints, per mode, the median,
95th percentile and maximum of that count during the backups, and the backups' durations.
Runs PostgreSQL as the `postgres` OS user when started as root.
"""
import os, shutil, statistics, subprocess, sys, threading, time, json

PG_BIN = os.environ.get("WALARCH_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin")
AS_ROOT = os.geteuid() == 0


def as_pg(cmd, **kw):
    prefix = ["runuser", "-u", "postgres", "--"] if AS_ROOT else []
    return subprocess.run(prefix + cmd, check=True, **kw)


def as_pg_popen(cmd, **kw):
    prefix = ["runuser", "-u", "postgres", "--"] if AS_ROOT else []
    return subprocess.Popen(prefix + cmd, **kw)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    walarch, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    scale = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if AS_ROOT:
        shutil.chown(work, "postgres", "postgres")
    data, repo = os.path.join(work, "data"), os.path.join(work, "repo")
    port = "54329"
    as_pg([f"{PG_BIN}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-instructions"],
          stdout=subprocess.DEVNULL)
    with open(os.path.join(data, "postgresql.conf"), "a") as conf:
        conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{work}'\n"
                   f"archive_mode = on\narchive_command = '{walarch} --repo {repo} wal-push %p'\n"
                   "max_wal_size = '4GB'\ncheckpoint_timeout = '30min'\nfsync = on\n")
    as_pg([f"{PG_BIN}/pg_ctl", "-D", data, "-l", os.path.join(work, "log"), "-w", "start"],
          stdout=subprocess.DEVNULL)
    conn = ["-h", "127.0.0.1", "-p", port, "-U", "postgres"]
    try:
        as_pg(["pgbench", *conn, "-i", "-q", "-s", str(scale), "postgres"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        status = os.path.join(data, "pg_wal", "archive_status")
        results = {"wal priority": [], "--no-wal-priority": []}
        for _ in range(rounds):
            for mode in results:
                wait_archived(status)
                load = as_pg_popen(["pgbench", *conn, "-n", "-c", "4", "-j", "2", "-T", "600", "postgres"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(3)
                samples, stop = [], threading.Event()

                def sample():
                    while not stop.is_set():
                        samples.append(sum(1 for n in os.listdir(status) if n.endswith(".ready")))
                        time.sleep(0.05)

                sampler = threading.Thread(target=sample)
                sampler.start()
                args = [walarch, "--repo", repo, "--json", "backup", "--pgdata", data,
                        "--dbname", f"host=127.0.0.1 port={port} user=postgres"]
                if mode != "wal priority":
                    args.append("--no-wal-priority")
                started = time.perf_counter()
                out = as_pg(args, capture_output=True, text=True)
                seconds = time.perf_counter() - started
                stop.set()
                sampler.join()
                as_pg(["psql", *conn, "-qAtc",
                       "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'pgbench'",
                       "postgres"], stdout=subprocess.DEVNULL)
                load.wait()
                stored = json.loads(out.stdout)["stored_bytes"]
                results[mode].append((samples, seconds, stored))
                print(f"{mode:>18}: backup {seconds:6.1f} s ({stored / 2**20:.0f} MiB stored), waiting segments "
                      f"median {statistics.median(samples)}, p95 {percentile(samples, 0.95)}, max {max(samples)}",
                      flush=True)
        print("\nsummary over", rounds, "round(s) per mode (segments of 16 MiB waiting for archive_command):")
        for mode, runs in results.items():
            every = [s for samples, _, _ in runs for s in samples]
            durations = [d for _, d, _ in runs]
            print(f"{mode:>18}: median {statistics.median(every)}, p95 {percentile(every, 0.95)}, "
                  f"max {max(every)}; backup median {statistics.median(durations):.1f} s")
    finally:
        as_pg([f"{PG_BIN}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], stdout=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


def wait_archived(status, timeout=300):
    deadline = time.time() + timeout
    while any(n.endswith(".ready") for n in os.listdir(status)):
        assert time.time() < deadline, "archiving did not catch up"
        time.sleep(0.2)


main()
