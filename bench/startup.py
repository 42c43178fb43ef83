"""Start-up time of every console command: wall time of `CMD -h`, of `longnet_plugins` (the listing) and of
`longnet_train -tr LongRepPretrainer -h` (a plugin trainer's options, which imports it), median of --repeats runs.

    python3 bench/startup.py [--repeats 5] [--json out.json]

Commands run as subprocesses through the installed scripts next to this interpreter (not a pyenv/conda shim, whose
own start-up would be counted). The machine's load is printed with the numbers: on shared cores they vary a lot.
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def console_scripts() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return sorted(line.split("=", 1)[0].strip() for line in lines if line.strip())


def script_path(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.is_file() else name


def wall_time(argv: list[str], repeats: int) -> tuple[float, int]:
    """Median wall seconds and the exit code of the last run."""
    times, rc = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        rc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="runs per command, the median is reported (default 5)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file (default: none)")
    args = p.parse_args()
    cases = [(f"{name} -h", [script_path(name), "-h"]) for name in console_scripts()]
    cases += [("longnet_plugins", [script_path("longnet_plugins")]),
              ("longnet_train -tr LongRepPretrainer -h", [script_path("longnet_train"), "-tr", "LongRepPretrainer",
                                                          "-h"])]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} cores, load {load:.1f}; median of {args.repeats} runs")
    rows = []
    for label, argv in cases:
        seconds, rc = wall_time(argv, args.repeats)
        rows.append({"command": label, "seconds": round(seconds, 3), "exit_code": rc})
        print(f"{seconds:7.2f} s  rc {rc}  {label}", flush=True)
    helps = [r["seconds"] for r in rows if r["command"].endswith(" -h") and "-tr" not in r["command"]]
    print(f"\n-h of {len(helps)} commands: median {statistics.median(helps):.2f} s, max {max(helps):.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load, "repeats": args.repeats, "rows": rows}, indent=2))
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
