"""Pair, sequence and subject-batch samplers over a `LongitudinalIndex`, sparse-context filling and frozen
validation draws. Import them from `longnet.data.longitudinal`.

Every sampler precomputes its eligible subjects (and valid visit pairs) at construction, so a draw never
loops: a configuration that cannot produce a sample fails once, up front, with a message naming the sampler
and its parameters, instead of spinning in a resampling loop. A draw depends only on the Generator passed
in, which the trainer seeds per batch (`make_batch_iterator(make_batch(rng), stream)`).
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from longnet.errors import LongnetError
from longnet.utils.files import load_json, save_json

if TYPE_CHECKING:
    from longnet.data.longitudinal import LongitudinalIndex

PAIR_MODES = ("adjacent", "random", "window")


@dataclass
class PairDraw:
    """Two visits; for intra-subject pairs a is not later than b and dt_days = days_b − days_a ≥ 0.

    Inter-subject pairs have dt_days = nan and `subject_b` ≠ `subject`. days/meta give each visit's
    visitsTr.csv values so a trainer needs no second lookup.
    """

    subject: str
    case_a: str
    case_b: str
    dt_days: float
    subject_b: str = ""
    days_a: float = 0.0
    days_b: float = 0.0
    meta_a: dict = field(default_factory=dict)
    meta_b: dict = field(default_factory=dict)


@dataclass
class SequenceDraw:
    """`n_context` slots in time order ending right before the target (left-padded; None = missing slot)."""

    subject: str
    context: list[str | None]
    target: str
    context_days: list[float | None]
    target_days: float
    context_meta: list[dict | None] = field(default_factory=list)
    target_meta: dict = field(default_factory=dict)

    @property
    def valid(self) -> list[bool]:
        """Which context slots hold a visit (the model's sparsity mask)."""
        return [c is not None for c in self.context]


class _Sampler:
    """Common bits: the index, a JSON-able description (for frozen draws) and eligible subjects."""

    index: "LongitudinalIndex"

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def draw(self, rng: np.random.Generator):
        raise NotImplementedError

    def _eligible(self, min_visits: int) -> list[str]:
        return [s for s, cs in self.index.subjects.items() if len(cs) >= min_visits]

    def _fail(self, reason: str) -> LongnetError:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "sampler")
        return LongnetError(f"{type(self).__name__}({params}): {reason} among {len(self.index.subjects)} "
                            f"subject(s) / {len(self.index)} visit(s)", self.index.data_folder)


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


class IntraSubjectPairSampler(_Sampler):
    """Two visits of one subject: `adjacent` (j, j+1), `random` (two distinct visits, time-sorted), `window`
    (any pair with min_days ≤ Δt ≤ max_days). The window also filters the other modes when given.

    Subject first (uniform over subjects with a valid pair), then a pair of that subject (uniform), as the
    method specs do, so subjects with many visits do not dominate.
    """

    def __init__(self, index: "LongitudinalIndex", mode: str = "adjacent", min_days: float | None = None,
                 max_days: float | None = None):
        if mode not in PAIR_MODES:
            raise ValueError(f"mode must be one of {PAIR_MODES}, got {mode!r}")
        if mode == "window" and min_days is None and max_days is None:
            raise ValueError("mode='window' needs min_days and/or max_days")
        self.index, self.mode = index, mode
        self.min_days = None if min_days is None else float(min_days)
        self.max_days = None if max_days is None else float(max_days)
        self._pairs: dict[str, list[tuple[int, int]]] = {}
        for s, cs in index.subjects.items():
            days = [index.days(c) for c in cs]
            cand = ((i, i + 1) for i in range(len(cs) - 1)) if mode == "adjacent" else \
                ((i, j) for i in range(len(cs)) for j in range(i + 1, len(cs)))
            ok = [(i, j) for i, j in cand if self._in_window(days[j] - days[i])]
            if ok:
                self._pairs[s] = ok
        self._subjects = list(self._pairs)
        if not self._subjects:
            raise self._fail("no subject has a visit pair inside the window" if self._windowed()
                             else "no subject has two or more visits")

    def _windowed(self) -> bool:
        return self.min_days is not None or self.max_days is not None

    def _in_window(self, dt: float) -> bool:
        return (self.min_days is None or dt >= self.min_days) and (self.max_days is None or dt <= self.max_days)

    def config(self) -> dict[str, Any]:
        return {"sampler": type(self).__name__, "mode": self.mode, "min_days": self.min_days,
                "max_days": self.max_days}

    @property
    def subjects(self) -> list[str]:
        """Subjects that can produce a pair."""
        return list(self._subjects)

    def draw(self, rng: np.random.Generator) -> PairDraw:
        s = _pick(rng, self._subjects)
        i, j = _pick(rng, self._pairs[s])
        cs = self.index.visits_of(s)
        a, b = self.index.visit(cs[i]), self.index.visit(cs[j])
        return PairDraw(s, a.case, b.case, b.days - a.days, s, a.days, b.days, dict(a.meta), dict(b.meta))


class InterSubjectPairSampler(_Sampler):
    """One random visit from each of two different subjects (dt_days = nan)."""

    def __init__(self, index: "LongitudinalIndex", min_visits: int = 1):
        self.index, self.min_visits = index, int(min_visits)
        self._subjects = self._eligible(self.min_visits)
        if len(self._subjects) < 2:
            raise self._fail("fewer than two subjects")

    def config(self) -> dict[str, Any]:
        return {"sampler": type(self).__name__, "min_visits": self.min_visits}

    def draw(self, rng: np.random.Generator) -> PairDraw:
        i, j = rng.choice(len(self._subjects), size=2, replace=False)
        sa, sb = self._subjects[int(i)], self._subjects[int(j)]
        a = self.index.visit(_pick(rng, self.index.visits_of(sa)))
        b = self.index.visit(_pick(rng, self.index.visits_of(sb)))
        return PairDraw(sa, a.case, b.case, float("nan"), sb, a.days, b.days, dict(a.meta), dict(b.meta))


class SequenceSampler(_Sampler):
    """Target visit k of a subject and the `n_context` slots for visits k−n_context … k−1.

    Slots before the first visit are None (left padding); the last `gap` slots are always hidden; every other
    slot is hidden with probability `mask_prob`, but at least one visit is kept (a random one of those
    allowed). Targets are drawn uniformly among visits that have at least one allowed context visit.
    """

    def __init__(self, index: "LongitudinalIndex", n_context: int, mask_prob: float = 0.5, gap: int = 0,
                 min_visits: int = 2):
        n_context, gap = int(n_context), int(gap)
        if n_context < 1 or gap < 0 or gap >= n_context:
            raise ValueError(f"need n_context ≥ 1 and 0 ≤ gap < n_context, got n_context={n_context}, gap={gap}")
        if not 0.0 <= mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
        self.index, self.n_context, self.mask_prob, self.gap = index, n_context, float(mask_prob), gap
        self.min_visits = int(min_visits)
        self._subjects = self._eligible(max(self.min_visits, gap + 2))
        if not self._subjects:
            raise self._fail(f"no subject has {max(self.min_visits, gap + 2)} or more visits")

    def config(self) -> dict[str, Any]:
        return {"sampler": type(self).__name__, "n_context": self.n_context, "mask_prob": self.mask_prob,
                "gap": self.gap, "min_visits": self.min_visits}

    def draw(self, rng: np.random.Generator) -> SequenceDraw:
        s = _pick(rng, self._subjects)
        cs = self.index.visits_of(s)
        k = int(rng.integers(self.gap + 1, len(cs)))
        first = k - self.n_context  # visit index of slot 0
        allowed = [i for i in range(self.n_context) if 0 <= first + i <= k - self.gap - 1]
        keep = rng.random(self.n_context) >= self.mask_prob  # drawn for every slot: fixed RNG consumption
        kept = [i for i in allowed if keep[i]] or [_pick(rng, allowed)]
        context: list[str | None] = [None] * self.n_context
        for i in kept:
            context[i] = cs[first + i]
        infos = [self.index.visit(c) if c is not None else None for c in context]
        t = self.index.visit(cs[k])
        return SequenceDraw(s, context, t.case, [v.days if v else None for v in infos], t.days,
                            [dict(v.meta) if v else None for v in infos], dict(t.meta))


class SubjectBatchSampler(_Sampler):
    """`batch_size` distinct subjects with at least `min_visits` visits each."""

    def __init__(self, index: "LongitudinalIndex", batch_size: int, min_visits: int = 2):
        self.index, self.batch_size, self.min_visits = index, int(batch_size), int(min_visits)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self._subjects = self._eligible(self.min_visits)
        if len(self._subjects) < self.batch_size:
            raise self._fail(f"only {len(self._subjects)} subject(s) with {self.min_visits}+ visits for a batch "
                             f"of {self.batch_size} distinct subjects")

    def config(self) -> dict[str, Any]:
        return {"sampler": type(self).__name__, "batch_size": self.batch_size, "min_visits": self.min_visits}

    def draw(self, rng: np.random.Generator) -> list[str]:
        idx = rng.choice(len(self._subjects), size=self.batch_size, replace=False)
        return [self._subjects[int(i)] for i in idx]


def fill_sparse(slots: Sequence[Any], zero_is_missing: bool = False) -> list[Any]:
    """Forward-fill missing slots (None, or all-zero arrays with `zero_is_missing`); slots before the first
    valid frame take the earliest valid frame ([0,a,0,b,0] → [a,a,a,b,b]).

    Returns the same array objects (no copies)."""
    def missing(x) -> bool:
        return x is None or (zero_is_missing and not np.any(np.asarray(x)))

    valid = [x for x in slots if not missing(x)]
    if not valid:
        raise ValueError("fill_sparse needs at least one valid frame")
    out, last = [], valid[0]
    for x in slots:
        if not missing(x):
            last = x
        out.append(last)
    return out


# --- frozen validation draws ---------------------------------------------------------------------------
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def frozen_draws_path(preprocessed_dataset_folder: str | Path, name: str, fold: int | str) -> Path:
    """`<preprocessed>/frozen_draws/<name>_fold<k>.json`, next to splits_final.json."""
    if not _NAME.match(str(name)) or not _NAME.match(str(fold)):
        raise ValueError(f"invalid frozen-draw name/fold {name!r}/{fold!r}")
    return Path(preprocessed_dataset_folder) / "frozen_draws" / f"{name}_fold{fold}.json"


def _encode(draw) -> dict:
    if isinstance(draw, PairDraw):
        d = asdict(draw)
        d["dt_days"] = None if math.isnan(d["dt_days"]) else d["dt_days"]  # strict JSON has no NaN
        return {"kind": "pair", **d}
    if isinstance(draw, SequenceDraw):
        return {"kind": "sequence", **asdict(draw)}
    if isinstance(draw, list):
        return {"kind": "subjects", "subjects": list(draw)}
    raise TypeError(f"cannot freeze a draw of type {type(draw).__name__}")


def _decode(d: dict):
    d = dict(d)
    kind = d.pop("kind")
    if kind == "pair":
        d["dt_days"] = float("nan") if d["dt_days"] is None else float(d["dt_days"])
        return PairDraw(**d)
    if kind == "sequence":
        return SequenceDraw(**d)
    if kind == "subjects":
        return list(d["subjects"])
    raise ValueError(f"unknown draw kind {kind!r}")


def _cases_of(draw) -> list[str]:
    if isinstance(draw, PairDraw):
        return [draw.case_a, draw.case_b]
    if isinstance(draw, SequenceDraw):
        return [c for c in draw.context if c is not None] + [draw.target]
    return []


def _signature(sampler: _Sampler, n: int, seed: int) -> dict:
    cases = "\n".join(sorted(sampler.index.cases)).encode()
    return {"sampler": sampler.config(), "n": int(n), "seed": int(seed),
            "cases_sha1": hashlib.sha1(cases).hexdigest()}


def frozen_draws(sampler: _Sampler, n: int, seed: int, path: str | Path) -> list:
    """Draw `n` samples once (draw i from Generator([seed, i])), save them as JSON at `path`, and return the
    saved draws verbatim on every later call, in this or any other process.

    A file made by a different sampler configuration, n, seed or case list is refused (delete it to redraw)
    rather than silently reused or overwritten: models compared on one split must see the same draws.
    Concurrent first calls (DDP ranks) are harmless: each writes identical content atomically.
    """
    path = Path(path)
    if n < 0 or seed < 0:
        raise ValueError("n and seed must be non-negative")
    sig = _signature(sampler, n, seed)
    if path.is_file():
        stored = load_json(path)
        if not isinstance(stored, dict) or "draws" not in stored:
            raise LongnetError("not a frozen-draws file (delete it to redraw)", path)
        old = {k: stored.get(k) for k in sig}
        if old != sig:
            diff = ", ".join(f"{k}: {old[k]!r} → {sig[k]!r}" for k in sig if old[k] != sig[k])
            raise LongnetError(f"frozen draws were made for a different setup ({diff}); delete the file to "
                               "redraw (models compared on this split then no longer share validation draws)", path)
        draws = [_decode(d) for d in stored["draws"]]
        unknown = sorted({c for d in draws for c in _cases_of(d) if c not in sampler.index})
        if unknown:
            raise LongnetError(f"frozen draws reference cases outside this split (e.g. {unknown[0]})", path)
        return draws
    draws = [sampler.draw(np.random.default_rng([int(seed), i])) for i in range(int(n))]
    save_json({**sig, "draws": [_encode(d) for d in draws]}, path, indent=1)
    return [_decode(_encode(d)) for d in draws]  # identical to what a later reload returns
