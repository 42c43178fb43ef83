"""Trainer options: ranges, and typed options dataclasses that generate the flags and hold each default once.

An explicit value is used as given (0 where 0 means something, e.g. `--val-iters 0`, never replaced by a default
through `x or default`), or refused with one line naming the flag. `longnet_train`'s shared options (epochs, seed,
...) are checked against CORE_OPTION_RANGES; a trainer declares its own as an `options_class` of `option(...)`
fields.
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


# ---------------------------------------------------------------------------- typed options
def option(default: Any, help: str, *, flag: str | tuple[str, ...] | None = None, choices: tuple | None = None,
           range: OptionRange | None = None, metavar: str | None = None, nargs: int | str | None = None,
           kind: type | None = None, required: bool = False) -> Any:
    """One field of a trainer's options dataclass: its default (held here once), help text, range or choices.
    The command-line flag is `--field-name` unless `flag` names it (a tuple: the first name and aliases); a bool
    field becomes a switch; `nargs` values of type `kind` make a list (the range, if any, applies to each);
    `required`: the run needs a value (no default)."""
    from dataclasses import field

    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "range": range,
                                            "metavar": metavar, "nargs": nargs, "kind": kind,
                                            "required": required})


def _flags(f) -> tuple[str, ...]:
    flag = f.metadata["flag"]
    return (flag,) if isinstance(flag, str) else tuple(flag or (flag_of(f.name),))


def _fields(options_cls: type) -> list:
    from dataclasses import fields

    return [f for f in fields(options_cls) if "help" in f.metadata]


def add_option_arguments(parser, options_cls: type, exclude: tuple[str, ...] = ()) -> None:
    """Command-line flags generated from an options dataclass (values left None when not given, so the
    dataclass default applies; `-h` shows that default); `exclude`: fields a trainer does not offer."""
    for f in _fields(options_cls):
        if f.name in exclude:
            continue
        m = f.metadata
        if f.type in (bool, "bool") or isinstance(f.default, bool):
            parser.add_argument(*_flags(f), dest=f.name, action="store_true", default=None,
                                help=m["help"] + ("" if not f.default else " (default on)"))
            continue
        kind = m["kind"] or {int: int, float: float}.get(type(f.default)) or (m["range"].kind if m["range"] else str)
        parser.add_argument(*_flags(f), dest=f.name, type=kind, default=None, choices=m["choices"],
                            metavar=m["metavar"], nargs=m["nargs"], required=m["required"],
                            help=m["help"] + ("" if m["required"] else f" (default {f.default}")
                            + (f"; {m['range'].describe()}" if m["range"] else "") + ("" if m["required"] else ")"))


def parse_options(options_cls: type, options: Mapping[str, Any], check_required: bool = True) -> Any:
    """The typed options of a run: given values (None = not given) over the dataclass defaults, ranges and
    choices checked with one line naming the flag (`check_required=False`: only the values that are given)."""
    values = {}
    for f in _fields(options_cls):
        value = options.get(f.name)
        value = f.default if value is None else value
        m = f.metadata
        flag = _flags(f)[0]
        if value is None and m["required"] and check_required:
            raise LongnetError(f"{flag} is required")
        if value is None:  # an option whose default is "decided elsewhere" (e.g. the plans' patch size)
            values[f.name] = None
            continue
        items = list(value) if m["nargs"] else [value]
        if m["range"] is not None and not all(m["range"].accepts(v) for v in items):
            raise LongnetError(f"{flag} must be {m['range'].describe()}" + (" each" if m["nargs"] else "")
                               + f", got {value!r}")
        if m["choices"] is not None and value not in m["choices"]:
            raise LongnetError(f"{flag} must be one of {', '.join(map(str, m['choices']))}, got {value!r}")
        values[f.name] = type(f.default)(value) if isinstance(f.default, (int, float)) and not isinstance(
            f.default, bool) else value
    return options_cls(**values)
