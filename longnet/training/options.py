"""Range checks for numeric trainer options, shared by `longnet_train` and `Trainer.__init__`.

`--epochs 0` used to become the default (1000) through `x or default`, and a negative count wrote an untrained
checkpoint_final.pth with exit 0. Every numeric option now has a declared range: an explicit value is used as given
(0 where 0 means something, e.g. `--val-iters 0`), or refused with one line naming the flag. Trainers declare their
own options in `option_ranges`; the ranges of all base classes apply too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from longnet.errors import LongnetError


@dataclass(frozen=True)
class OptionRange:
    """`kind` int or float; the value must be >= `minimum` (> when `exclusive`) and <= `maximum` if given."""

    kind: type = int
    minimum: float | None = None
    exclusive: bool = False
    maximum: float | None = None

    def describe(self) -> str:
        kind = "an integer" if self.kind is int else "a number"
        parts = []
        if self.minimum is not None:
            parts.append(f"{'>' if self.exclusive else '>='} {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        return kind + (" " + " and ".join(parts) if parts else "")

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not (isinstance(value, int) or float(value).is_integer()):
            return False
        if not math.isfinite(value):
            return False
        if self.minimum is not None and (value <= self.minimum if self.exclusive else value < self.minimum):
            return False
        return self.maximum is None or value <= self.maximum


POSITIVE_INT = OptionRange(int, 1)
NON_NEGATIVE_INT = OptionRange(int, 0)
POSITIVE_FLOAT = OptionRange(float, 0, exclusive=True)
NON_NEGATIVE_FLOAT = OptionRange(float, 0)

CORE_OPTION_RANGES: dict[str, OptionRange] = {
    "epochs": POSITIVE_INT, "iters_per_epoch": POSITIVE_INT, "val_iters": NON_NEGATIVE_INT,
    "save_every": POSITIVE_INT, "seed": NON_NEGATIVE_INT,
}


def flag_of(key: str) -> str:
    """The command-line flag of an option key (`iters_per_epoch` -> `--iters-per-epoch`)."""
    return "--" + key.replace("_", "-")


def check_options(options: Mapping[str, Any], ranges: Mapping[str, OptionRange]) -> None:
    """Raise LongnetError for the first option outside its range (None = not given = the trainer's default)."""
    for key, rng in ranges.items():
        value = options.get(key)
        if value is not None and not rng.accepts(value):
            raise LongnetError(f"{flag_of(key)} must be {rng.describe()}, got {value!r}")


def option_value(options: Mapping[str, Any], key: str, default: Any) -> Any:
    """options[key] unless it is missing or None (explicit 0 stays 0, unlike `options.get(key) or default`)."""
    value = options.get(key)
    return default if value is None else value
