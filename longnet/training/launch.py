"""From command-line options to a running Trainer: folders, splits, results layout, DDP spawn.

Results go to `$LONGNET_RESULTS/DatasetXXX_Name/TRAINER__PLANS__CONFIG/fold_N/` with plans.json, dataset.json
and dataset_fingerprint.json copied one level up, exactly as nnU-Net lays them out.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from longnet.errors import LongnetError
from longnet.paths import dataset_name_from_id, preprocessed_root, results_root
from longnet.planning.plans import Plans
from longnet.utils.files import load_json, remove_stale_temp_files, save_json

ALL_FOLD_VAL_CASES = 5  # fold 'all' trains on everything and validates on this many cases


@dataclass
class TrainRequest:
    """Everything `longnet_train` needs; picklable so DDP spawn can hand it to each process."""

    dataset: str
    configuration: str
    fold: int | str
    trainer_name: str = "nnUNetTrainer"
    plans_name: str = "nnUNetPlans"
    device: str | None = None
    resume: bool = False
    num_gpus: int = 1
    options: dict = field(default_factory=dict)


def parse_fold(text: str | int) -> int | str:
    if str(text) == "all":
        return "all"
    try:
        fold = int(text)
    except ValueError:
        raise LongnetError(f"fold must be an integer or 'all', got {text!r}") from None
    if fold < 0:
        raise LongnetError(f"fold must be >= 0, got {fold}")
    return fold


def fold_folder_name(fold: int | str) -> str:
    return f"fold_{fold}"


def model_folder(dataset_name: str, trainer: str, plans: str, configuration: str,
                 output_name: str | None = None) -> Path:
    """RESULTS/Dataset/TRAINER__PLANS__CONFIGURATION, or RESULTS/Dataset/OUTPUT_NAME (--output-name: a baseline
    or variant beside the default run)."""
    return results_root() / dataset_name / (output_name or f"{trainer}__{plans}__{configuration}")


def load_split(pre_dir: Path, fold: int | str, available: list[str], create: bool) -> tuple[list[str], list[str]]:
    """(train, val) case ids of `fold` from splits_final.json (created subject-level if missing and allowed)."""
    path = pre_dir / "splits_final.json"
    if fold == "all":
        cases = sorted(available)
        step = max(1, len(cases) // ALL_FOLD_VAL_CASES)
        return cases, cases[::step][:ALL_FOLD_VAL_CASES]
    if not path.is_file():
        subjects_file = pre_dir / "subjects.json"
        subjects = load_json(subjects_file) if subjects_file.is_file() else {c: [c] for c in available}
        if len(subjects) < 5:
            raise LongnetError(f"no splits_final.json and only {len(subjects)} subject(s), too few for 5 folds: "
                               f"train fold 'all' or provide splits_final.json", pre_dir)
        if create:
            from longnet.preprocessing.splits import subject_level_splits, write_generated_splits

            write_generated_splits(pre_dir, subject_level_splits(subjects))
        else:
            import time

            for _ in range(600):  # another rank is writing it
                if path.is_file():
                    break
                time.sleep(0.1)
    from longnet.preprocessing.splits import check_splits_format, check_subject_level

    splits = check_splits_format(load_json(path), path)
    if (pre_dir / "subjects.json").is_file():  # a user's file must not put one subject on both sides either
        check_subject_level(splits, load_json(pre_dir / "subjects.json"), path)
    if fold >= len(splits):
        raise LongnetError(f"fold {fold} requested but splits_final.json has only {len(splits)} split(s) "
                           f"(folds 0-{len(splits) - 1} or 'all')", path)
    train, val = list(splits[fold]["train"]), list(splits[fold]["val"])
    missing = sorted(set(train + val) - set(available))
    if missing:
        raise LongnetError(f"{len(missing)} case(s) of fold {fold} are not preprocessed (e.g. "
                           f"{', '.join(missing[:3])}); run longnet_preprocess for this configuration", path)
    return train, val


def _copy_model_files(pre_dir: Path, plans_file: Path, dest: Path, req: TrainRequest) -> None:
    from longnet.io.model_folder import MODEL_RECORD

    save_json({"trainer": req.trainer_name, "plans": req.plans_name, "configuration": req.configuration},
              dest / MODEL_RECORD)
    save_json(load_json(plans_file), dest / "plans.json")
    save_json(load_json(pre_dir / "dataset.json"), dest / "dataset.json")
    if (pre_dir / "dataset_fingerprint.json").is_file():
        save_json(load_json(pre_dir / "dataset_fingerprint.json"), dest / "dataset_fingerprint.json")


def build_trainer(req: TrainRequest):
    """Resolve dataset/plans/trainer and construct the trainer (no process group, no data attached yet)."""
    from longnet.registry import get_trainer
    from longnet.training import runtime

    trainer_cls = get_trainer(req.trainer_name)
    name = dataset_name_from_id(req.dataset, preprocessed_root())
    pre_dir = preprocessed_root() / name
    if not pre_dir.is_dir():
        raise LongnetError("preprocessed dataset not found (run longnet_plan_and_preprocess)", pre_dir)
    plans_file = pre_dir / f"{req.plans_name}.json"
    if not plans_file.is_file():
        from longnet.io.case_names import MARKER_FILES

        found = sorted(f.stem for f in pre_dir.glob("*.json") if f.name not in MARKER_FILES)  # the rest are plans
        hint = f"; plans here: {', '.join(found)} (pass one with -p)" if found else ""
        raise LongnetError(f"plans {req.plans_name!r} not found (run longnet_plan_experiment, or pass -p){hint}",
                           plans_file)
    plans = Plans.load(plans_file)
    if plans.plans.get("dataset_name") not in (None, name):
        raise LongnetError(f"plans file belongs to dataset {plans.plans['dataset_name']!r}, not {name!r}", plans_file)
    plans.configuration(req.configuration)  # unknown configuration -> clear error
    dataset_json = load_json(pre_dir / "dataset.json")
    from longnet.training.distributed import local_rank_from_env

    device = runtime.resolve_device(req.device, local_rank_from_env())
    trainer = trainer_cls(plans, req.configuration, req.fold, dataset_json, device=device, options=req.options)
    trainer.trainer_name = req.trainer_name
    return trainer, name, pre_dir, plans_file


def run_training(req: TrainRequest) -> int:
    """Train one fold in this process (joining the process group when launched with several processes)."""
    from longnet.training.distributed import cleanup_distributed, init_distributed, local_rank_from_env
    from longnet.training.runtime import resolve_device
    from longnet.training.trainer import TrainingInterrupted

    device = resolve_device(req.device, local_rank_from_env())
    dist = init_distributed(device.type)
    try:
        trainer, name, pre_dir, plans_file = build_trainer(req)
        available = _available_cases(pre_dir, trainer.configuration_manager.data_identifier)
        train, val = _on_rank0_for_all(dist, lambda: load_split(pre_dir, req.fold, available, create=True))
        out = model_folder(name, req.trainer_name, req.plans_name, req.configuration, req.options.get("output_name"))
        fold_dir = out / fold_folder_name(req.fold)
        trainer.setup(pre_dir, fold_dir, train, val, dist)
        trainer.check_requirements()  # before anything is written: a refused run leaves no output behind
        _check_same_resume_point(trainer, req, dist)
        _preflight_checkpoints(trainer, req)
        if dist.is_main:
            fold_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(fold_dir)  # a checkpoint save cut short by kill -9 leaves a temp file
            _copy_model_files(pre_dir, plans_file, out, req)
        dist.barrier()
        try:
            if req.options.get("val"):
                trainer.run_validation_only()
            else:
                trainer.run_training(resume=req.resume)
        except TrainingInterrupted:
            return 143
        return 0
    finally:
        cleanup_distributed()


def _preflight_checkpoints(trainer, req: TrainRequest) -> None:
    """Open `--pretrained-weights` and (with `--c`) the checkpoint to resume from before the model folder is
    created or touched, so a corrupt, foreign or pickled-object file leaves no partial output behind.

    The trainer opens them again later (weights_only, cheap next to a training run)."""
    from longnet.io.checkpoints import load_checkpoint

    pretrained = req.options.get("pretrained_weights")
    if pretrained:
        load_checkpoint(pretrained, map_location="cpu")
    if req.resume:
        found = trainer.find_resume_checkpoint()
        if found is not None:
            load_checkpoint(found[1], map_location="cpu",
                            required=("network_weights", "current_epoch", "optimizer_state"))


def _on_rank0_for_all(dist, fn):
    """fn() on global rank 0, its result (or its error) on every rank: other nodes need not see the files rank 0
    writes (e.g. a new splits_final.json), and no rank waits forever when rank 0 fails."""
    if not dist.enabled:
        return fn()
    result = None
    if dist.is_main:
        try:
            result = fn()
        except Exception as e:  # sent to the other ranks, raised everywhere
            result = e
    result = dist.broadcast_object(result)
    if isinstance(result, BaseException):
        raise result
    return result


def _check_same_resume_point(trainer, req: TrainRequest, dist) -> None:
    """With `--c` every rank must resume from the same checkpoint; on several nodes this fails when the results
    folder is not on a filesystem they all share."""
    if not (req.resume and dist.enabled):
        return
    found = trainer.find_resume_checkpoint()
    seen = dist.all_gather_object(found[1].name if found else None)
    if len(set(seen)) > 1:
        raise LongnetError(f"the ranks see different checkpoints to resume from ({', '.join(map(str, seen))}): "
                           f"put the results folder on a filesystem shared by all nodes", trainer.output_folder)


def _available_cases(pre_dir: Path, data_identifier: str) -> list[str]:
    from longnet.io.storage import list_cases

    folder = pre_dir / data_identifier
    if not folder.is_dir():
        raise LongnetError(f"no preprocessed data for this configuration ({data_identifier}); run longnet_preprocess",
                           folder)
    return list_cases(folder)


def _spawn_worker(rank: int, world_size: int, port: int, req: TrainRequest) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if req.device in (None, "cpu") and not _cuda_available():
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))  # share the cores, don't oversubscribe
    try:
        rc = run_training(req)
    except LongnetError as e:
        print(f"longnet: error: (rank {rank}) {e}", file=sys.stderr)
        sys.exit(1)
    if rc:
        sys.exit(rc)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def spawn_training(req: TrainRequest) -> int:
    """`--num-gpus N`: start N local processes (one per GPU, or CPU processes with gloo) and wait for them."""
    import torch.multiprocessing as mp

    from longnet.training.distributed import free_port

    if req.device not in (None, "cpu") and not str(req.device).startswith("cuda"):
        raise LongnetError("--num-gpus > 1 needs -device cuda or cpu")
    import torch

    if (req.device or "cuda").startswith("cuda") and torch.cuda.is_available():
        if torch.cuda.device_count() < req.num_gpus:
            raise LongnetError(f"--num-gpus {req.num_gpus} but only {torch.cuda.device_count()} GPU(s) visible")
    # CPU processes are forked (no re-import of torch per process); CUDA needs spawn.
    method = "spawn" if _cuda_available() and req.device != "cpu" else "fork"
    import signal

    ctx = mp.start_processes(_spawn_worker, args=(req.num_gpus, free_port(), req), nprocs=req.num_gpus,
                             join=False, start_method=method)

    def forward(signum, frame):  # a scheduler's SIGTERM reaches the parent: let every rank checkpoint
        for p in ctx.processes:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: no forwarding
        previous = None
    try:
        while not ctx.join():
            pass
    except mp.ProcessExitedException as e:
        code = getattr(e, "exit_code", 1)
        if code == 143:
            return 143
        raise LongnetError(f"a training process exited with code {code} (see the messages above)") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
