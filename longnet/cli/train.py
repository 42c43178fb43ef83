"""`longnet_train DATASET CONFIG FOLD [-tr TRAINER] [-p PLANS] ...`: train one fold with a registered trainer."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from longnet.cli.common import HelpFormatter, check_name, cli_main, help_requested
from longnet.training.options import add_option_arguments
from longnet.training.segmentation_options import DEFAULT_TRAINER, SegmentationOptions

_CORE = ("dataset", "configuration", "fold", "trainer", "plans", "device", "c", "num_gpus")
LONG_CPU_SCHEDULE = 10_000  # optimiser steps beyond which a default schedule on the CPU earns a warning


def _base_parser(add_help: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="longnet_train", add_help=add_help, allow_abbrev=False,
                                formatter_class=HelpFormatter,
                                description="Train one cross-validation fold (or 'all') of a preprocessed dataset. "
                                            "Trainer plugins add their own options: `-tr NAME -h` lists them "
                                            "(without -tr: nnUNetTrainer's); `longnet_plugins` lists the trainers.")
    p.add_argument("dataset", help="dataset id (e.g. 4) or folder name (Dataset004_Hippocampus)")
    p.add_argument("configuration", help="configuration in the plans, e.g. 3d_fullres or 2d")
    p.add_argument("fold", help="fold 0-4 of splits_final.json, or 'all'")
    p.add_argument("-tr", dest="trainer", default=DEFAULT_TRAINER, help="trainer name (default nnUNetTrainer)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans name (default nnUNetPlans)")
    p.add_argument("-device", "--device", dest="device", default=None, choices=["cpu", "cuda", "mps"],
                   help="default: cuda when available, else cpu")
    p.add_argument("--epochs", type=int, default=None,
                   help="number of epochs; overrides the trainer's own count, also that of variants such as "
                        "nnUNetTrainer_250epochs (default: the trainer's, nnU-Net: 1000)")
    p.add_argument("--iters-per-epoch", dest="iters_per_epoch", type=int, default=None,
                   help="training iterations per epoch (default: the trainer's, nnU-Net: 250)")
    p.add_argument("--pretrained-weights", "-pretrained_weights", dest="pretrained_weights", default=None,
                   help="checkpoint to initialise from (tensors matched by name and shape; default: none, "
                        "random initialisation)")
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
    p.add_argument("--output-name", dest="output_name", default=None,
                   help="model folder name under $LONGNET_RESULTS/DatasetXXX_Name/ instead of TRAINER__PLANS__CONFIG "
                        "(a baseline or variant next to the default run; predict it with -m; default: none)")
    p.add_argument("--random-init", dest="random_init", action="store_true",
                   help="write the freshly initialised network (seeded by --seed) as checkpoint_final.pth without "
                        "training: the random-initialisation baseline of a pretraining method")
    p.add_argument("--val_best", action="store_true",
                   help="final validation with checkpoint_best.pth instead of the final weights (after training, "
                        "or with --val; same validation/ folder)")
    return p


def build_parser(trainer_cls=None) -> argparse.ArgumentParser:
    p = _base_parser(add_help=True)
    if trainer_cls is not None:
        group = p.add_argument_group(f"options of {trainer_cls.__name__}")
        try:
            trainer_cls.add_arguments(group)
        except argparse.ArgumentError as e:  # e.g. a plugin option named like one of longnet_train's own
            from longnet.errors import LongnetError

            raise LongnetError(f"trainer {trainer_cls.__name__} declares an option that clashes with another "
                               f"({e}); longnet_train's own options (longnet_train -h) cannot be redeclared: "
                               "rename it in the trainer's options") from None
    return p


def _trainer_name(argv: Sequence[str] | None) -> str:
    """The -tr value alone: a parser without the positionals, so `-h` and `-tr X -h` work with or without them."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("-tr", dest="trainer", default=DEFAULT_TRAINER)
    return p.parse_known_args(argv)[0].trainer


def _print_help(name: str) -> None:
    """Help of the core options plus trainer `name`'s. The default trainer's options are declared without torch,
    so plain `longnet_train -h` answers at once; any other trainer is imported to describe it."""
    if name == DEFAULT_TRAINER:
        p = _base_parser(add_help=True)
        add_option_arguments(p.add_argument_group(f"options of {DEFAULT_TRAINER}"), SegmentationOptions)
    else:
        from longnet.registry import get_trainer

        p = build_parser(get_trainer(name))
    p.print_help()


def _warn_long_cpu_schedule(trainer_cls: type, args: argparse.Namespace) -> None:
    """nnU-Net's schedule (1000 x 250 steps) is sized for a GPU: on the CPU say how long it is and what to pass."""
    if args.epochs is not None or args.iters_per_epoch is not None or args.val or getattr(args, "random_init", False):
        return  # --random-init takes no step
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    steps = int(trainer_cls.num_epochs) * int(trainer_cls.num_iterations_per_epoch)
    if device == "cpu" and steps >= LONG_CPU_SCHEDULE:
        print(f"longnet: warning: {trainer_cls.__name__}'s default schedule is {trainer_cls.num_epochs} epochs x "
              f"{trainer_cls.num_iterations_per_epoch} iterations ({steps:,} steps, sized for a GPU): on the CPU "
              "that takes days; for a short run pass e.g. --epochs 10 --iters-per-epoch 50", file=sys.stderr)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    if help_requested(argv):
        _print_help(_trainer_name(argv))
        return 0
    _base_parser(add_help=False).parse_known_args(argv)  # missing positionals fail before a trainer is imported
    from longnet.errors import LongnetError
    from longnet.registry import get_trainer
    from longnet.training.launch import TrainRequest, parse_fold, run_training, spawn_training

    trainer_cls = get_trainer(_trainer_name(argv))
    args = build_parser(trainer_cls).parse_args(argv)
    for value, flag in ((args.plans, "-p"), (args.configuration, "configuration"),
                        *(((args.output_name, "--output-name"),) if args.output_name else ())):
        check_name(value, flag)  # they name the results folder
    if args.random_init and (args.c or args.val):
        raise LongnetError("--random-init writes an untrained network: it cannot be combined with --c or --val")
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
    from longnet.paths import preprocessed_root, results_root

    preprocessed_root(), results_root()  # an unset folder is the first thing to fix, before any schedule advice
    _warn_long_cpu_schedule(trainer_cls, args)
    req = TrainRequest(dataset=args.dataset, configuration=args.configuration, fold=parse_fold(args.fold),
                       trainer_name=args.trainer, plans_name=args.plans, device=args.device, resume=args.c,
                       num_gpus=args.num_gpus, options=options)
    if args.num_gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return spawn_training(req)
    return run_training(req)


if __name__ == "__main__":
    raise SystemExit(main())
