"""bench/methods.py end to end on a very small generated cohort with the quick budgets: every method and its
baseline train, predict and are scored, the table has a row per method and methods.json holds finite numbers."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from raw_datasets import REPO_ROOT

ROWS = {"tfm": "TFM", "longrep": "LongRep", "stamp": "STAMP", "learner": "LEARNER", "clinimcl": "ClinImCL"}


@pytest.mark.slow
def test_methods_bench_quick(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "methods.py"), "--demo-cohort", "0", "--quick",
                           "--seeds", "0", "--train-subjects", "6", "--test-subjects", "4", "--shape", "24", "32", "24",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    for label in ROWS.values():
        assert any(line.startswith(f"| {label} |") for line in table), (label, proc.stdout)

    result = json.loads((out / "methods.json").read_text())
    assert result["skipped"] == {}
    runs = {r["method"]: r for r in result["runs"]}
    assert set(runs) == set(ROWS)
    for method, run in runs.items():
        assert "error" not in run, run
        assert run["comparisons"], method
        for c in run["comparisons"]:
            values = (c["method_value"], c["baseline_value"])
            if "AUROC" in c["metric"]:  # undefined when the 4 test subjects hold one converter class
                assert all(math.isnan(v) or 0 <= v <= 1 for v in values), c
            else:
                assert all(math.isfinite(v) for v in values), c
    assert {r["method"] for r in result["summary"]} == set(ROWS.values())
    assert all(r["compared"] <= 1 for r in result["summary"])

    # a second run must neither take over the folder of a running benchmark nor one it did not make
    (out / ".longnet_methods_bench").write_text(f"{os.getpid()} running\n")  # this test process: alive
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    for folder, message in ((out, "in use by a running benchmark"), (foreign, "was not made by this script")):
        again = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "methods.py"), "--demo-cohort", "0",
                                "--out", str(folder)], capture_output=True, text=True, timeout=120)
        assert again.returncode != 0 and message in again.stderr, again.stderr
    assert (foreign / "keep.txt").read_text() == "mine" and (out / "methods.json").is_file()
