"""Training records: per-epoch metric lists (stored in checkpoints), the text log, progress.png and TensorBoard.

Only rank 0 writes files; every rank keeps the same metric lists so the best-checkpoint decision agrees.
"""
from __future__ import annotations

import math
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from longnet.utils.files import atomic_path, write_error


class TrainingLogger:
    """Per-epoch values as plain lists of floats (checkpoint-safe) plus the human-readable outputs."""

    def __init__(self, output_folder: Path | None, write_files: bool, tensorboard: bool = False,
                 verbose: bool = True, title: str = ""):
        self.output_folder = Path(output_folder) if output_folder is not None else None
        self.title = title  # names the run on progress.png (several runs' pictures look alike otherwise)
        self.write_files = write_files and self.output_folder is not None
        self.verbose = verbose
        self.values: dict[str, list] = {}
        self.log_file: Path | None = None
        self._tb = None
        if self.write_files:  # the folder itself is created on the first write
            stamp = datetime.now().strftime("%Y_%m_%d_%H_%M_%S")
            self.log_file = self.output_folder / f"training_log_{stamp}.txt"
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(self.output_folder / "tensorboard"))  # creates the folder
                except Exception as e:  # tensorboard is optional
                    warnings.warn(f"--tensorboard ignored: TensorBoard is not usable ({type(e).__name__}: {e})")

    # --- metric lists -----------------------------------------------------------------------------------
    def log(self, key: str, value: Any, epoch: int) -> None:
        """Store `value` for `epoch` (lists stay aligned with epochs; a resumed epoch overwrites its entry)."""
        value = _plain(value)
        lst = self.values.setdefault(key, [])
        while len(lst) < epoch:
            lst.append(None)
        if len(lst) == epoch:
            lst.append(value)
        else:
            lst[epoch] = value
        if self._tb is not None and isinstance(value, (int, float)):
            self._tb.add_scalar(key, value, epoch)

    def state(self) -> dict:
        return {k: list(v) for k, v in self.values.items()}

    def load_state(self, state: dict, upto_epoch: int) -> None:
        """Restore lists from a checkpoint, keeping only epochs < upto_epoch (those the checkpoint finished)."""
        self.values = {k: list(v)[:upto_epoch] for k, v in (state or {}).items()}

    # --- text ---------------------------------------------------------------------------------------------
    def print(self, *parts: Any, also_stdout: bool = True) -> None:
        text = " ".join(str(p) for p in parts)
        line = f"{datetime.now():%Y-%m-%d %H:%M:%S.%f}: {text}"
        if self.log_file is not None:
            try:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_file, "a") as f:
                    f.write(line + "\n")
            except OSError as e:  # full disk, read-only folder: one clear line, as for every other write
                raise write_error(e, self.log_file) from None
        if also_stdout and self.verbose and self.write_files:
            print(text, file=sys.stdout, flush=True)

    # --- plot ---------------------------------------------------------------------------------------------
    def plot_progress(self) -> None:
        """Write progress.png atomically: losses and pseudo Dice, epoch duration, learning rate."""
        if not self.write_files:
            return
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        v = self.values
        epochs = list(range(len(v.get("train_loss", []))))
        if not epochs:
            return
        # markers while the points are few: a one-epoch run is a single point, invisible as a line alone
        mark = {"marker": "o", "markersize": 7} if len(epochs) <= 50 else {}
        fig, axes = plt.subplots(3, 1, figsize=(12, 14))
        if self.title:
            fig.suptitle(self.title, fontsize=16)
        for a in axes:  # whole epochs only (matplotlib pads a single point to ±0.05 with fractional ticks)
            if len(epochs) <= 15:
                a.set_xticks(epochs)
                a.set_xlim(-0.5, len(epochs) - 0.5)
            else:
                a.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax = axes[0]
        for key, style in (("train_loss", "b-"), ("val_loss", "r-")):
            if key in v:
                ax.plot(epochs, _series(v[key], len(epochs)), style, label=key.replace("_", " "), linewidth=3,
                        **mark)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(loc=(0, 1))
        metric_keys = [k for k in ("mean_fg_dice", "ema_mean_fg_dice") if k in v]
        if metric_keys:
            ax2 = ax.twinx()
            for key, style in zip(metric_keys, ("g:", "g-")):
                ax2.plot(epochs, _series(v[key], len(epochs)), style, label=key.replace("_", " "), linewidth=2,
                         **mark)
            ax2.set_ylabel("pseudo dice")
            ax2.legend(loc=(0.2, 1))
        if "epoch_time" in v:
            axes[1].plot(epochs, _series(v["epoch_time"], len(epochs)), "b-", linewidth=3, **mark)
            axes[1].set_xlabel("epoch")
            axes[1].set_ylabel("time [s]")
        if "lr" in v:
            axes[2].plot(epochs, _series(v["lr"], len(epochs)), "b-", linewidth=3, **mark)
            axes[2].set_xlabel("epoch")
            axes[2].set_ylabel("learning rate")
        plt.tight_layout(rect=(0, 0, 1, 0.97) if self.title else None)
        dest = self.output_folder / "progress.png"
        with atomic_path(dest, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _series(values: list, n: int) -> list[float]:
    out = []
    for x in list(values)[:n] + [None] * max(0, n - len(values)):
        out.append(float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan)
    return out


def _plain(value: Any) -> Any:
    """Python numbers/lists only (numpy and 0-d tensors converted) so checkpoints stay weights_only-loadable."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(x) for x in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    return float(value)
