"""The table a load benchmark prints: median seconds per side, rows/s, ratios, peak RSS.

Usage: report.py RUN_DIR --title TEXT --rows N --anchor NAME
                 --side NAME=LABEL[=TARGET[=ROWS]] ... [--rss NAME=LABEL[=PROCS] ...]

RUN_DIR holds NAME.ms (one wall time per round, milliseconds; a side named A+B is A's and
B's of each round added up) and NAME.time (one
'peak-RSS-KB user-s sys-s' line per run, from /usr/bin/time). A side's ratio is its median
over the anchor's: how many times faster the anchor (pgferry) is; TARGET is the ratio the
issue asks for; ROWS, when the side loads only part of the rows. PROCS: how many runs of
that process make one round (their CPU is added up per round). Medians resist a busy neighbour on a shared machine.
"""

import argparse
import os
import statistics


def read_ms(run, name):
    """A side's seconds per round; NAME a+b: a's and b's of each round added up."""
    if "+" in name:
        parts = [read_ms(run, n) for n in name.split("+")]
        if not all(parts) or len({len(p) for p in parts}) != 1:
            return []
        return [sum(r) for r in zip(*parts)]
    path = os.path.join(run, f"{name}.ms")
    if not os.path.exists(path):
        return []
    return [int(x) / 1000 for x in open(path).read().split()]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--title", required=True)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--anchor", required=True)
    p.add_argument("--side", action="append", default=[])
    p.add_argument("--rss", action="append", default=[])
    a = p.parse_args()

    anchor = statistics.median(read_ms(a.run, a.anchor))
    sides = [s.split("=") for s in a.side]
    width = max(len(s[1]) for s in sides)
    rounds = len(read_ms(a.run, a.anchor))
    print(f"\n{a.title}: {a.rows} rows, median of {rounds} rounds")
    print(f"{'side':<{width}}  {'seconds':>7}  {'rows/s':>9}  {'pgferry is':>10}  {'target':>13}  rounds")
    met = missed = 0
    for s in sides:
        name, label = s[0], s[1]
        target = float(s[2]) if len(s) > 2 and s[2] else None
        rows = int(s[3]) if len(s) > 3 else a.rows
        runs = read_ms(a.run, name)
        if not runs:
            print(f"{label:<{width}}  (not run)")
            continue
        t = statistics.median(runs)
        ratio = "" if name == a.anchor else f"{t / anchor:.2f}x"
        verdict = ""
        if target is not None:
            ok = t / anchor >= target
            met, missed = met + ok, missed + (not ok)
            verdict = f">={target:g}x {'met' if ok else 'MISSED'}"
        each = " ".join(f"{x:.2f}" for x in runs)
        print(f"{label:<{width}}  {t:>7.2f}  {rows / t:>9.0f}  {ratio:>10}  {verdict:>13}  {each}")
    if met + missed:
        print(f"targets: {met} of {met + missed} met (pgferry is N x = the side takes N times pgferry's time)")
    if a.rss:
        print("peak RSS of each process (max over its runs) and its CPU seconds per round (median):")
    rw = max((len(r.split("=")[1]) for r in a.rss), default=0)
    for r in a.rss:
        name, label, *per = r.split("=")
        per = int(per[0]) if per else 1
        path = os.path.join(a.run, f"{name}.time")
        if not os.path.exists(path):
            print(f"  {label}: (not run)")
            continue
        lines = [line.split() for line in open(path) if line.strip() and line.split()[0].isdigit()]
        kb = max(int(x[0]) for x in lines)
        each = [float(x[1]) + float(x[2]) for x in lines]
        cpu = statistics.median(sum(each[i : i + per]) for i in range(0, len(each), per))
        print(f"  {label:<{rw}}  {kb / 1024:7.1f} MB  {cpu:6.2f} s CPU")


if __name__ == "__main__":
    main()
