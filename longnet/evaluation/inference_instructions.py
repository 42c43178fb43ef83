"""The commands that reproduce the selected model or ensemble on new data, line for line as nnU-Net prints
them (`inference_instructions.txt`), with longnet's command names."""
from __future__ import annotations

from pathlib import Path

from longnet.utils.files import atomic_path


def predict_command(dataset: str, model: dict, folds, output_folder: str, save_probabilities: bool) -> str:
    """`longnet_predict ...` for one member; nnU-Net's fold string starts with a space (two after `-f`)."""
    fold_str = "".join(f" {f}" for f in folds)
    cmd = (f"longnet_predict -d {dataset} -i INPUT_FOLDER -o {output_folder} -f {fold_str} -tr {model['trainer']} "
           f"-c {model['configuration']} -p {model['plans_identifier']}")
    return cmd + (" --save_probabilities" if save_probabilities else "")


def instruction_lines(info: dict, num_processes: int) -> list[str]:
    """The instructions for an inference_information dict (one string per line)."""
    best = info["best_model_or_ensemble"]
    members = best["selected_model_or_models"]
    ensemble = len(members) > 1
    lines = ["***Run inference like this:***", ""]
    if ensemble:
        lines += ["An ensemble won! What a surprise! Run the following commands to run predictions with the "
                  "ensemble members:", ""]
    outputs = []
    for k, model in enumerate(members, start=1):
        out = f"OUTPUT_FOLDER_MODEL_{k}" if ensemble else "OUTPUT_FOLDER"
        outputs.append(out)
        lines.append(predict_command(info["dataset_name_or_id"], model, info["folds"], out, ensemble))
    if ensemble:
        lines += ["", "The run ensembling with:", "",
                  f"longnet_ensemble -i {' '.join(outputs)} -o OUTPUT_FOLDER -np {num_processes}"]
    lines += ["", "***Once inference is completed, run postprocessing like this:***", "",
              f"longnet_apply_postprocessing -i OUTPUT_FOLDER -o OUTPUT_FOLDER_PP -pp_pkl_file "
              f"{best['postprocessing_file']} -np {num_processes} -plans_json {best['some_plans_file']}"]
    return lines


def write_instructions(lines: list[str], dest: str | Path) -> None:
    with atomic_path(dest, suffix=".txt") as tmp:
        Path(tmp).write_text("".join(f"{line}\n" for line in lines))
