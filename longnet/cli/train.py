"""`longnet_train DATASET CONFIG FOLD [-tr TRAINER] [-p PLANS] ...`: train one fold with a registered trainer."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from longnet.cli.common import check_name, cli_main

_CORE = ("dataset", "configuration", "fold", "trainer", "plans", "device", "c", "num_gpus")


def _base_parser(add_help: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="longnet_train", add_help=add_help, allow_abbrev=False,
                                description="Train one cross-validation fold (or 'all') of a preprocessed dataset. "
                                            "Trainer plugins may add their own options (see -tr NAME -h).")
    p.add_argument("dataset", help="dataset id (e.g. 4) or folder name (Dataset004_Hippocampus)")
    p.add_argument("configuration", help="configuration in the plans, e.g. 3d_fullres or 2d")
    p.add_argument("fold", help="fold 0-4 of splits_final.json, or 'all'")
    p.add_argument("-tr", dest="trainer", default="nnUNetTrainer", help="trainer name (default nnUNetTrainer)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans name (default nnUNetPlans)")
    p.add_argument("-device", "--device", dest="device", default=None, choices=["cpu", "cuda", "mps"],
                   help="default: cuda when available, else cpu")
    p.add_argument("--epochs", type=int, default=None,
                   help="number of epochs; overrides the trainer's own count, also that of variants such as "
                        "nnUNetTrainer_250epochs (default: the trainer's, nnU-Net: 1000)")
    p.add_argument("--iters-per-epoch", dest="iters_per_epoch", type=int, default=None,
                   help="training iterations per epoch (nnU-Net: 250)")
    p.add_argument("--pretrained-weights", "-pretrained_weights", dest="pretrained_weights", default=None,
                   help="checkpoint to initialise from (tensors matched by name and shape)")
    p.add_argument("--c", "--continue", dest="c", action="store_true",
                   help="resume from checkpoint_latest (else final = done, else best)")
    p.add_argument("--num-gpus", "-num_gpus", dest="num_gpus", type=int, default=1,
                   help="DDP over N local processes (GPUs, or CPU processes with -device cpu); for several "
                        "nodes start longnet_train under torchrun instead (see README)")
    p.add_argument("--seed", type=int, default=12345, help="random seed (default 12345)")
    p.add_argument("--save-every", dest="save_every", type=int, default=None,
                   help="write checkpoint_latest.pth every N epochs (default 50)")
    p.add_argument("--amp", default="auto", choices=["auto", "fp16", "bf16", "off"],
                   help="mixed precision on CUDA (auto = fp16 with grad scaling); always off on CPU")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs (if installed)")
    p.add_argument("--deterministic", action="store_true", help="disable cudnn.benchmark for reproducibility on GPU")
    p.add_argument("--disable-checkpointing", "--disable_checkpointing", dest="disable_checkpointing",
                   action="store_true", help="write no checkpoints (for quick experiments)")
    p.add_argument("--npz", action="store_true",
                   help="final validation also writes {case}.npz (probabilities) and the case properties "
                        "({case}.json, and {case}.pkl for nnU-Net's tools): needed by longnet_find_best_configuration "
                        "and longnet_ensemble")
    p.add_argument("--val", action="store_true",
                   help="only run the final validation of a finished training (needs checkpoint_final.pth)")
    p.add_argument("--val_best", action="store_true",
                   help="final validation with checkpoint_best.pth instead of the final weights (after training, "
                        "or with --val; same validation/ folder)")
    return p


def build_parser(trainer_cls=None) -> argparse.ArgumentParser:
    p = _base_parser(add_help=True)
    if trainer_cls is not None:
        group = p.add_argument_group(f"options of {trainer_cls.__name__}")
        trainer_cls.add_arguments(group)
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    from longnet.errors import LongnetError
    from longnet.registry import get_trainer
    from longnet.training.launch import TrainRequest, parse_fold, run_training, spawn_training

    pre, _ = _base_parser(add_help=False).parse_known_args(argv)
    trainer_cls = get_trainer(pre.trainer)
    args = build_parser(trainer_cls).parse_args(argv)
    for value, flag in ((args.plans, "-p"), (args.configuration, "configuration")):
        check_name(value, flag)  # they name the results folder
    if args.val and args.c:
        raise LongnetError("--c and --val cannot be combined: --val only validates a finished training")
    if args.val_best and args.disable_checkpointing:
        raise LongnetError("--val_best needs checkpoint_best.pth, which --disable_checkpointing never writes")
    options = {k: v for k, v in vars(args).items() if k not in _CORE}
    trainer_cls.check_options(options)  # --epochs 0, negative counts: refused before anything is written
    if options.get("pretrained_weights"):
        path = Path(options["pretrained_weights"]).resolve()
        if not path.is_file():
            raise LongnetError("pretrained weights file not found", path)
        options["pretrained_weights"] = str(path)
    if args.num_gpus < 1:
        raise LongnetError(f"--num-gpus must be >= 1, got {args.num_gpus}")
    req = TrainRequest(dataset=args.dataset, configuration=args.configuration, fold=parse_fold(args.fold),
                       trainer_name=args.trainer, plans_name=args.plans, device=args.device, resume=args.c,
                       num_gpus=args.num_gpus, options=options)
    if args.num_gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return spawn_training(req)
    return run_training(req)


if __name__ == "__main__":
    raise SystemExit(main())
