"""Decide which keep-largest-component steps help, by nnU-Net's rule (no thresholds, no margins).

1. Joint foreground (all foreground labels, labels even for region datasets): accepted iff the foreground mean
   Dice is strictly higher and no label/region's mean Dice is strictly lower.
2. With more than one label/region, each one in declared order on the current best folder: accepted iff its
   own mean Dice strictly improves. NaN never compares as better or worse.
The final folder's files become `<predictions>/postprocessed/`; the decisions go to `postprocessing.json` and
`postprocessing.pkl` in the predictions folder.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from longnet.utils.files import staging_dir
from longnet.dataset.folder_setup import folder_setup
from longnet.errors import LongnetError
from longnet.evaluation.nnunet_summary import (evaluate_to_summary, foreground_dice, key_dice, load_summary,
                                               targets_of)
from longnet.evaluation.segmentation import key_of
from longnet.postprocessing.apply import apply_to_folder, label_maps
from longnet.postprocessing.decisions import Step, save_decisions


def _joint_foreground_helps(pp: dict, baseline: dict) -> bool:
    if not foreground_dice(pp) > foreground_dice(baseline):
        return False
    return not any(key_dice(pp, k) < key_dice(baseline, k) for k in pp.get("mean", {}))


def _copy_files(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(source.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            shutil.copy2(f, dest / f.name)


def determine_postprocessing(folder_predictions: str | Path, folder_ref: str | Path,
                             plans_json: str | Path | None = None, dataset_json: str | Path | None = None,
                             num_processes: int = 1, keep_postprocessed: bool = True) -> list[Step]:
    """Run the steps above on `folder_predictions` against `folder_ref`; returns the accepted steps in order.

    The baseline is `folder_predictions/summary.json` (computed first if missing). Everything is built in a
    hidden staging folder and moved into place at the end, so an error leaves no partial `postprocessed/`."""
    pred, ref = Path(folder_predictions), Path(folder_ref)
    if not ref.is_dir():
        raise LongnetError("reference folder not found", ref)
    setup = folder_setup(pred, plans_json, dataset_json)
    ending, rw = setup.file_ending, setup.reader_writer.name
    predicted = label_maps(pred, ending)
    if not predicted:
        raise LongnetError(f"no predicted label maps ending in {ending}", pred)
    references = label_maps(ref, ending)
    if not set(references) <= set(predicted):
        print(f"longnet: warning: {len(set(references) - set(predicted))} reference case(s) have no prediction in "
              f"{pred}; postprocessing should be determined on the whole dataset", file=sys.stderr)

    def evaluate(folder: Path) -> dict:
        return evaluate_to_summary(ref, folder, setup.dataset_json, folder / "summary.json", num_processes,
                                   chill=True, reader_writer=rw)

    if not (pred / "summary.json").is_file():
        evaluate(pred)
    baseline = load_summary(pred / "summary.json")
    staging = staging_dir(pred, ".postprocessed.tmp-")
    try:
        temp = staging / "temp"
        steps: list[Step] = []
        fg_step = list(setup.label_manager.foreground_labels)
        out = temp / "keep_largest_fg"
        apply_to_folder(pred, out, [fg_step], ending, rw, num_processes)
        pp = evaluate(out)
        if _joint_foreground_helps(pp, baseline):
            print(f"Keeping only the largest foreground component improves the foreground mean Dice: "
                  f"{foreground_dice(baseline):.5f} -> {foreground_dice(pp):.5f}")
            source, source_summary = out, pp
            steps.append(fg_step)
        else:
            print("Keeping only the largest foreground component does not improve the results")
            source, source_summary = pred, baseline
        targets = targets_of(setup.label_manager)
        if len(targets) > 1:
            best = temp / "keep_largest_perClassOrRegion_currentBest"
            for target in targets:
                out = temp / "keep_largest_perClassOrRegion"
                apply_to_folder(source, out, [target], ending, rw, num_processes)
                pp = evaluate(out)
                key = key_of(target)
                before, after = key_dice(source_summary, key), key_dice(pp, key)
                if after > before:
                    print(f"Keeping only the largest component of {key} improves its Dice: {before:.5f} -> {after:.5f}")
                    shutil.rmtree(best, ignore_errors=True)
                    out.rename(best)
                    source, source_summary = best, pp
                    steps.append(target)
                else:
                    print(f"Keeping only the largest component of {key} does not improve its Dice")
                    shutil.rmtree(out)
        final = staging / "postprocessed"
        _copy_files(source, final)
        save_decisions(pred, steps, baseline, source_summary)
        shutil.rmtree(pred / "postprocessed", ignore_errors=True)
        if keep_postprocessed:
            final.rename(pred / "postprocessed")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return steps
