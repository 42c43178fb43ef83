"""`longnet_demo --quick` end to end on CPU: the CI-sized version of the first command a new user runs.

Only the segmentation recipe runs here (`--trainers nnUNetTrainer`): each method plugin's recipe is
exercised by that plugin's own tests, and all of them together do not fit the CI budget of 3 minutes.
"""
from __future__ import annotations

import importlib.util
import json
import os
import resource
import time

import pytest

_NEEDED = ["longnet.cli.plan_and_preprocess", "longnet.cli.train", "longnet.cli.predict", "longnet.cli.evaluate"]
_MISSING = [m for m in _NEEDED if importlib.util.find_spec(m) is None]

pytestmark = [
    pytest.mark.skipif(bool(_MISSING), reason=f"demo pipeline incomplete: missing {', '.join(_MISSING)}"),
    pytest.mark.timeout(600),
]


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (data-loading workers): unlike wall time, it does not
    depend on how many other jobs share the machine."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def test_demo_quick_end_to_end(tmp_path, capsys):
    from longnet.demo.main import main

    out = tmp_path / "demo"
    t0, cpu0 = time.time(), _cpu_seconds()
    rc = main(["--quick", "--device", "cpu", "--trainers", "nnUNetTrainer", "--out", str(out)])
    elapsed, cpu = time.time() - t0, _cpu_seconds() - cpu0
    printed = capsys.readouterr().out
    assert rc == 0, printed[-3000:]
    print(f"--quick used {cpu:.0f} s of CPU ({elapsed:.0f} s wall)")  # speed targets live in the README/bench
    assert "trainer" in printed and "nnUNetTrainer" in printed and "mean fg Dice" in printed
    summary = json.loads((out / "demo_summary.json").read_text())
    seg = next(r for r in summary["rows"] if r["trainer"] == "nnUNetTrainer")
    assert seg["value"] != "-"
    overlay = out / "pictures" / "overlay_nnUNetTrainer.png"
    assert overlay.is_file() and overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    preds = list((out / "predictions" / "nnUNetTrainer").glob("*.nii.gz"))
    assert len(preds) == len(list((out / "raw" / "Dataset990_LongDemo" / "imagesTs").glob("*_0000.nii.gz")))
    assert (out / "results" / "Dataset990_LongDemo" / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_all"
            / "progress.png").is_file()
    # the caller's environment is restored
    assert os.environ.get("LONGNET_RAW") != str(out / "raw")
