#!/usr/bin/env python3
"""Summarises an interleaved run (interleaved.sh): per measure the median (min-max) per tool,
and the ratios issue 17's goals are stated in, per round and as the median of the rounds.
usage: interleaved_summary.py RESULTS_DIR"""
import csv
import os
import statistics as st
import sys

R = sys.argv[1]


def rows(name):
    path = os.path.join(R, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def by_tool(rs, value):
    """tool -> values in file order (round order: each round appends one line per tool)"""
    out = {}
    for r in rs:
        out.setdefault(r["tool"], []).append(float(r[value]))
    return out


def fmt(values):
    return f"{st.median(values):.2f} s ({min(values):.2f}-{max(values):.2f}, {len(values)} runs)"


def ratios(num, den):
    """per-round ratio num/den"""
    return [a / b for a, b in zip(num, den)]


out = []
drain = by_tool(rows("archive_backlog.tsv"), "drain_s")
recovery = by_tool(rows("restore.tsv"), "recovery_s")
out.append("| measure | walarch | anchor | ratio (median of rounds; per round) | goal |")
out.append("|---|---|---|---|---|")
DRAIN_GOAL = ">= 2.5x pgBackRest async"
for label, ours, theirs in [
    ("backlog drain, local", "walarch", "pgbr-async-zst"),
    ("backlog drain, local (before)", "walarch-before", "pgbr-async-zst"),
    ("backlog drain, S3", "walarch-s3", "pgbr-s3-async-zst"),
    ("backlog drain, S3 (before)", "walarch-s3-before", "pgbr-s3-async-zst"),
]:
    if ours in drain and theirs in drain:
        rs = ratios(drain[theirs], drain[ours])
        out.append(
            f"| {label} | {fmt(drain[ours])} | {theirs} {fmt(drain[theirs])} | "
            f"{st.median(rs):.2f}x faster; {', '.join(f'{r:.2f}' for r in rs)} | {DRAIN_GOAL} |"
        )
for label, ours in [("recovery from the archive", "walarch"),
                    ("recovery from the archive (before)", "walarch-before"),
                    ("recovery, segments pre-staged and renamed in (floor of a restore_command)",
                     "mv-staged"),
                    ("recovery, pre-staged, with 1 GiB written evenly beside it at replay's pace",
                     "mv-staged-io")]:
    if ours in recovery and "cp" in recovery:
        rs = ratios(recovery[ours], recovery["cp"])
        out.append(
            f"| {label} | {fmt(recovery[ours])} | cp {fmt(recovery['cp'])} | "
            f"{st.median(rs):.2f}x cp; {', '.join(f'{r:.2f}' for r in rs)} (max {max(rs):.2f}) | "
            "<= 0.80x cp median, no round above 0.90x |"
        )
# After against before, round by round (only when the run had an earlier build beside).
changes = []
for label, after, before, values in [
    ("drain, local", "walarch", "walarch-before", drain),
    ("drain, S3", "walarch-s3", "walarch-s3-before", drain),
    ("recovery", "walarch", "walarch-before", recovery),
]:
    if after in values and before in values:
        rs = ratios(values[after], values[before])
        changes.append(f"{label} {st.median(rs):.2f}x ({', '.join(f'{r:.2f}' for r in rs)})")
if changes:
    out.append("")
    out.append("this build's time / the earlier build's, median of rounds (per round): " + "; ".join(changes))
cpu = by_tool(rows("archive_backlog.tsv"), "tool_cpu_s")
if cpu:
    out.append("")
    out.append("tool CPU during the drain (median s): " + ", ".join(
        f"{tool} {st.median(v):.2f}" for tool, v in cpu.items()))
print("\n".join(out))
