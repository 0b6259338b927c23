#!/usr/bin/env python3
"""Where PostgreSQL's startup process waits during one recovery (run as root; needs perf).

usage: trace_startup.py TOOL [RESTORE_AS]      e.g. trace_startup.py cp mv-staged
       trace_startup.py walarch-before walarch     # this build, on the earlier build's archive

Runs run_restore.sh TOOL 1 (RESTORE_AS as run_restore.sh reads it) and, once the startup
process exists, `perf trace -e wait4,fsync,rename` on it. Prints the restore_command calls as
PostgreSQL waits for them (wait4: fork, sh, the command, its exit) and its fsyncs: count,
median, 10th/90th percentile and sum in ms. Only those three system calls are traced, so the
tracing itself costs little; compare tools traced the same way, not with untraced runs.
"""
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
tool = sys.argv[1]
restore_as = sys.argv[2] if len(sys.argv) > 2 else ""
name = restore_as or tool
bench_root = os.environ.get("BENCH_ROOT", "/var/tmp/walbench")
pgdata = os.path.join(bench_root, "b", name, "run1", "pgdata")
trace_file = f"/tmp/trace_startup-{name}.txt"
tracer = []


def startup_pid():
    """The startup process: the postmaster's child titled 'startup'."""
    try:
        with open(os.path.join(pgdata, "postmaster.pid")) as f:
            postmaster = int(f.readline())
        with open(f"/proc/{postmaster}/task/{postmaster}/children") as f:
            children = f.read().split()
        for child in children:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"startup" in f.read():
                    return child
    except (OSError, ValueError):
        return None
    return None


def attach(done):
    # Polls without forking: run_restore.sh waits for a quiet machine before it starts.
    while not done.is_set():
        pid = startup_pid()
        if pid:
            tracer.append(subprocess.Popen(
                ["perf", "trace", "-p", pid, "-e", "wait4,fsync,rename", "-o", trace_file]))
            return
        time.sleep(0.02)


env = dict(os.environ, RESULTS=os.environ.get("RESULTS", "/tmp/trace_startup-results"))
# The builds interleaved.sh installed last, unless given (tools walarch and walarch-before).
for variable, installed in [("WALARCH_BIN", "/var/tmp/walbench-bin/walarch"),
                            ("WALARCH_BEFORE_BIN", "/var/tmp/walbench-bin/walarch-before")]:
    if variable not in env and os.path.exists(installed):
        env[variable] = installed
if restore_as:
    env["RESTORE_AS"] = restore_as
done = threading.Event()
watcher = threading.Thread(target=attach, args=(done,))
watcher.start()
run = subprocess.run([os.path.join(HERE, "run_restore.sh"), tool, "1"], env=env,
                     capture_output=True, text=True)
done.set()
watcher.join()
for process in tracer:
    process.send_signal(signal.SIGINT)
    process.wait()
lines = [line for line in run.stdout.splitlines() + run.stderr.splitlines()
         if line.startswith("[")]
print(lines[-1] if lines else run.stderr[-2000:])
if run.returncode != 0 or not tracer:
    sys.exit(f"run_restore.sh failed ({run.returncode}) or the startup process was not traced")
text = open(trace_file).read()
for call in ("wait4", "fsync", "rename"):
    ms = [float(m) for m in re.findall(rf"\(\s*([\d.]+) ms\): {call}\(", text)]
    if ms:
        ranked = sorted(ms)
        print(f"{call:6s} {len(ms):4d} calls: median {statistics.median(ms):.2f} ms, "
              f"p10 {ranked[len(ms) // 10]:.2f}, p90 {ranked[9 * len(ms) // 10]:.2f}, "
              f"sum {sum(ms):.0f} ms")
