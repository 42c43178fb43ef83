"""Which earlier visit conditions a visit: a plain-data table of every case's earlier visits.

The table is built from one side of a split only (training cases for training, validation cases for
validation), so a prior is always a visit of the same subject, acquired earlier, and never a visit of the
other side. Kept free of torch so loader workers can hold it cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from longnet.api import LongnetError

PRIOR_MODES = ("immediate", "random")
PRIOR_SEG_MODES = ("none", "gt")


@dataclass(frozen=True)
class PriorTable:
    """case -> its subject's visits strictly before it (oldest first), plus which visits are labelled.

    `draw` falls back to the visit itself for a first visit (no earlier visit): the network then sees the
    same image twice, which is what an unchanged subject would look like, and the prior's segmentation
    channels stay zero (see `has_prior`).
    """

    earlier: dict[str, tuple[str, ...]]
    labelled: dict[str, bool] = field(default_factory=dict)
    subject: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_subjects(cls, subjects: Mapping[str, Sequence[str]],
                      labelled: Mapping[str, bool] | None = None) -> "PriorTable":
        """`subjects`: {subject: [cases in time order]}; unknown labelled status counts as labelled."""
        earlier: dict[str, tuple[str, ...]] = {}
        owner: dict[str, str] = {}
        for subj, cases in subjects.items():
            for i, c in enumerate(cases):
                if c in owner:
                    raise LongnetError(f"case {c!r} is listed for subjects {owner[c]!r} and {subj!r}")
                earlier[c] = tuple(cases[:i])
                owner[c] = str(subj)
        lab = {c: bool((labelled or {}).get(c, True)) for c in earlier}
        return cls(earlier, lab, owner)

    @classmethod
    def from_index(cls, index) -> "PriorTable":
        """From a `longnet.data.longitudinal.LongitudinalIndex` (visits sorted by days, visit index, case)."""
        return cls.from_subjects(index.subjects, {c: index.labelled(c) for c in index.cases})

    def candidates(self, case: str, mode: str) -> tuple[str, ...]:
        """Visits that may serve as `case`'s prior: the immediately preceding one, or any earlier one."""
        if mode not in PRIOR_MODES:
            raise LongnetError(f"unknown prior mode {mode!r} (choose from {', '.join(PRIOR_MODES)})")
        try:
            before = self.earlier[case]
        except KeyError:
            raise LongnetError(f"case {case!r} has no entry in the prior table (not in this split side)") from None
        return before[-1:] if mode == "immediate" else before

    def draw(self, case: str, mode: str, rng: np.random.Generator) -> str:
        """A prior for `case` (the case itself when it is its subject's first visit)."""
        cands = self.candidates(case, mode)
        if not cands:
            return case
        return cands[int(rng.integers(len(cands)))] if len(cands) > 1 else cands[0]

    def immediate(self, case: str) -> str:
        """The prior used at inference: the immediately preceding visit (the case itself for a first visit)."""
        cands = self.candidates(case, "immediate")
        return cands[0] if cands else case

    def has_prior(self, case: str, prior: str) -> bool:
        return prior != case

    def prior_labelled(self, case: str, prior: str) -> bool:
        """Whether the prior's ground truth may feed its segmentation channels (never for the fallback)."""
        return prior != case and self.labelled.get(prior, False)


def network_input_array(current: np.ndarray, prior: np.ndarray, prior_seg: np.ndarray | None,
                        labels: Sequence[int]) -> np.ndarray:
    """The input layout of both trainers: current visit's C channels, the prior's C channels, then (with
    `labels`) one one-hot channel per label of the prior's segmentation (zeros when `prior_seg` is None)."""
    from longnet.api import one_hot

    current = np.asarray(current, dtype=np.float32)
    prior = np.asarray(prior, dtype=np.float32)
    if prior.shape != current.shape:
        raise LongnetError(f"prior {prior.shape} and current visit {current.shape} are not on one grid")
    parts = [current, prior]
    if labels:
        if prior_seg is None:
            parts.append(np.zeros((len(labels), *current.shape[1:]), dtype=np.float32))
        else:
            seg = prior_seg[0] if prior_seg.ndim == current.ndim else prior_seg
            parts.append(one_hot(seg, list(labels)))
    return np.concatenate(parts)
