"""Wall time and peak memory of `longnet_plan_and_preprocess` vs nnU-Net 2.8.1 on MSD Task04_Hippocampus.

Both tools run one after the other in this invocation, on the same machine, with the same worker count, each on
its own freshly converted raw copy. nnU-Net must be installed in its own virtual environment (never a longnet
dependency), e.g.:
    python3 -m venv --system-site-packages /opt/nnunet_venv && /opt/nnunet_venv/bin/pip install nnunetv2==2.8.1
Usage:
    python3 bench/plan_and_preprocess.py [--nnunet-venv /opt/nnunet_venv] [--data ../shared/data/Task04_Hippocampus]
                                         [-np 2] [--repeats 1]
Prints one table: wall seconds and peak RSS (sum over the process tree, sampled every 50 ms), and the ratios.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tree_rss_kb(root_pid: int) -> int:
    """Sum of RSS over a process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            ppid = int(parts[1])
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
            children.setdefault(ppid, []).append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(cmd: list[str], env: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
            stop.wait(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    t.join()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    return wall, peak[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnunet-venv", default="/opt/nnunet_venv")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "Task04_Hippocampus"))
    ap.add_argument("-np", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    nn_bin = Path(args.nnunet_venv) / "bin"
    if not (nn_bin / "nnUNetv2_plan_and_preprocess").is_file():
        sys.exit(f"nnU-Net not found in {args.nnunet_venv}; install it there first (see this file's docstring)")
    ln_bin = Path(shutil.which("longnet_plan_and_preprocess") or sys.exit("longnet is not installed")).parent
    n = str(args.np)
    rows = []
    for rep in range(args.repeats):
        for tool in ("nnunet", "longnet"):
            work = Path(tempfile.mkdtemp(prefix=f"bench_pp_{tool}_"))
            env = dict(os.environ)
            for a, b in (("raw", "nnUNet_raw"), ("pre", "nnUNet_preprocessed"), ("res", "nnUNet_results")):
                (work / a).mkdir()
                env[b] = str(work / a)
                env["LONGNET_" + {"raw": "RAW", "pre": "PREPROCESSED", "res": "RESULTS"}[a]] = str(work / a)
            if tool == "nnunet":
                subprocess.run([str(nn_bin / "nnUNetv2_convert_MSD_dataset"), "-i", args.data, "-overwrite_id", "4"],
                               env=env, check=True, capture_output=True)
                cmd = [str(nn_bin / "nnUNetv2_plan_and_preprocess"), "-d", "4", "-c", "3d_fullres", "-np", n,
                       "-npfp", n]
            else:
                subprocess.run([str(ln_bin / "longnet_convert_msd"), "-i", args.data, "-overwrite_id", "4", "-np", n],
                               env=env, check=True, capture_output=True)
                cmd = [str(ln_bin / "longnet_plan_and_preprocess"), "-d", "4", "-c", "3d_fullres", "-np", n]
            wall, rss = run_measured(cmd, env)
            rows.append((rep, tool, wall, rss))
            print(f"repeat {rep} {tool:8s} wall {wall:6.1f} s  peak RSS {rss / 1024:7.0f} MiB", flush=True)
            shutil.rmtree(work)
    best = {t: min(r[2] for r in rows if r[1] == t) for t in ("nnunet", "longnet")}
    mem = {t: max(r[3] for r in rows if r[1] == t) for t in ("nnunet", "longnet")}
    print(f"\nTask04_Hippocampus plan_and_preprocess -c 3d_fullres, {n} workers, {os.cpu_count()} CPUs")
    print(f"| tool | wall s (best of {args.repeats}) | peak RSS MiB |")
    print("|---|---|---|")
    for t in ("nnunet", "longnet"):
        print(f"| {t} | {best[t]:.1f} | {mem[t] / 1024:.0f} |")
    print(f"| ratio longnet/nnU-Net | {best['longnet'] / best['nnunet']:.2f} | {mem['longnet'] / mem['nnunet']:.2f} |")


if __name__ == "__main__":
    main()
