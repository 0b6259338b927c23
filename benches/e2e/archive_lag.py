#!/usr/bin/env python3
"""Archive lag while a base backup runs at full speed: does WAL archiving stay ahead?

usage: archive_lag.py WALARCH_BIN WORKDIR [SCALE] [ROUNDS] [NOISE_MIB]

A PostgreSQL 15 cluster (pgbench scale SCALE, default 60, ~0.9 GB, plus NOISE_MIB, default
1024, of random hex text, which compresses about 2x where pgbench's tables compress 20x, so
that the backup has real work) archives through walarch into an S3 repository on a moto
server on 127.0.0.1 (`WALARCH_MOTO_SERVER` or moto_server on PATH): archiving and the backup
share the store, as they share a bucket's bandwidth in production. pgbench writes meanwhile
(4 clients). For each round, a `walarch backup`
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
    noise_mib = int(sys.argv[5]) if len(sys.argv) > 5 else 1024
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if AS_ROOT:
        shutil.chown(work, "postgres", "postgres")
    data = os.path.join(work, "data")
    port = "54329"
    moto_port = "54330"
    moto = subprocess.Popen([os.environ.get("WALARCH_MOTO_SERVER", "moto_server"), "-H", "127.0.0.1", "-p", moto_port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{moto_port}"
    for _ in range(100):
        try:
            subprocess.run(["curl", "-sf", "-X", "PUT", f"{endpoint}/lag"], check=True, stdout=subprocess.DEVNULL)
            break
        except subprocess.CalledProcessError:
            time.sleep(0.2)
    repo = "s3://lag/repo"
    s3_env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
              "WALARCH_S3_ENDPOINT": endpoint, "WALARCH_S3_ALLOW_HTTP": "true"}
    env_words = [f"{k}={v}" for k, v in s3_env.items()]
    as_pg([f"{PG_BIN}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-instructions"],
          stdout=subprocess.DEVNULL)
    with open(os.path.join(data, "postgresql.conf"), "a") as conf:
        conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{work}'\n"
                   f"archive_mode = on\narchive_command = 'env {' '.join(env_words)} {walarch} --repo {repo} wal-push %p'\n"
                   "max_wal_size = '4GB'\ncheckpoint_timeout = '30min'\nfsync = on\n")
    as_pg([f"{PG_BIN}/pg_ctl", "-D", data, "-l", os.path.join(work, "log"), "-w", "start"],
          stdout=subprocess.DEVNULL)
    conn = ["-h", "127.0.0.1", "-p", port, "-U", "postgres"]
    try:
        as_pg(["pgbench", *conn, "-i", "-q", "-s", str(scale), "postgres"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = noise_mib * 2**20 // 160
        as_pg(["psql", *conn, "-qAtc",
               f"create table noise as select md5(random()::text) || md5(random()::text) || md5(random()::text) "
               f"|| md5(random()::text) as t from generate_series(1, {rows})", "postgres"])
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
                args = ["env", *env_words, walarch, "--repo", repo, "--json", "backup", "--pgdata", data,
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
        moto.kill()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)


def wait_archived(status, timeout=300):
    deadline = time.time() + timeout
    while any(n.endswith(".ready") for n in os.listdir(status)):
        assert time.time() < deadline, "archiving did not catch up"
        time.sleep(0.2)


main()
