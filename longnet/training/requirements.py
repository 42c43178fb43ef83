"""What a trainer needs from a dataset, checked before any training starts so users get one clear message."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from longnet.data.dataset_index import DatasetIndex
from longnet.errors import LongnetError

LabelNeed = Literal["all", "some", "none", "any"]


@dataclass(frozen=True)
class Requirements:
    """Dataset requirements of a trainer.

    labels: 'all' every training case labelled; 'some' at least one labelled case (unlabelled ones are skipped);
    'none'/'any' labels are not needed. min_visits_per_subject: at least `min_subjects` subjects of the training
    split must have that many visits. required_columns: visitsTr.csv columns that every training case must have
('days' included: without visitsTr.csv a visit's day is its index in patientsTr.json).
    aligned_visits: the visits of a subject should be registered to one grid (`--align`); unaligned plans get a
    warning (not an error: identically acquired visits can share a grid without registration).
    """

    min_visits_per_subject: int = 1
    min_subjects: int = 1
    labels: LabelNeed = "any"
    required_columns: tuple[str, ...] = field(default_factory=tuple)
    #: visitsTr.csv columns that must hold a value for at least one training case (the others may be empty)
    some_columns: tuple[str, ...] = field(default_factory=tuple)
    #: compares visits voxel by voxel: warn when the plans were preprocessed without intra-subject alignment
    aligned_visits: bool = False


def check_requirements(req: Requirements, index: DatasetIndex, trainer_name: str) -> None:
    """Raise a LongnetError naming every unmet requirement of `trainer_name` on the training cases in `index`."""
    problems: list[str] = []
    if not index.cases:
        problems.append("the training split contains no cases")
    if req.labels not in ("all", "some", "none", "any"):
        raise ValueError(f"{trainer_name}.requirements.labels must be 'all', 'some', 'none' or 'any'")
    unlabelled = [c for c in index.cases if not index.labelled(c)]
    if req.labels == "all" and unlabelled:
        problems.append(f"every training case must be labelled, but {len(unlabelled)} are not "
                        f"(e.g. {', '.join(unlabelled[:3])})")
    if req.labels == "some" and index.cases and len(unlabelled) == len(index.cases):
        problems.append("at least one labelled training case is needed, but none of the "
                        f"{len(index.cases)} cases has a label")
    if req.min_visits_per_subject > 1:
        ok = [s for s, cs in index.subjects.items() if len(cs) >= req.min_visits_per_subject]
        if len(ok) < req.min_subjects:
            problems.append(f"needs at least {req.min_subjects} subject(s) with >= {req.min_visits_per_subject} "
                            f"visits, found {len(ok)} (of {len(index.subjects)} subjects; provide patientsTr.json "
                            f"to group visits into subjects)")
    for col in req.required_columns:
        if col == "days":  # the day of every visit, from visitsTr.csv (without it days are the visit order)
            missing = [c for c in index.cases if (index.visits.get(c) or {}).get("days_known") is False]
        else:
            missing = [c for c in index.cases if ((index.visits.get(c) or {}).get("meta") or {}).get(col) is None]
        if missing:
            problems.append(f"column {col!r} (visitsTr.csv) is missing or empty for {len(missing)} case(s) "
                            f"(e.g. {', '.join(missing[:3])})")
    for col in req.some_columns:
        if all(((index.visits.get(c) or {}).get("meta") or {}).get(col) is None for c in index.cases):
            problems.append(f"column {col!r} (visitsTr.csv) has no value for any training case")
    if problems:
        raise LongnetError(f"dataset does not meet the requirements of trainer {trainer_name}:\n  - "
                           + "\n  - ".join(problems), index.source or None)


def alignment_warning(req: Requirements, plans: dict, trainer_name: str) -> str | None:
    """The warning for a trainer that compares visits voxel by voxel on plans preprocessed without `--align`."""
    from longnet.preprocessing.alignment import alignment_mode

    if not req.aligned_visits or alignment_mode(plans) != "none":
        return None
    return (f"warning: {trainer_name} compares the visits of a subject voxel by voxel, but plans "
            f"{plans.get('plans_name', '')!r} were preprocessed without intra-subject alignment: preprocess with "
            "`longnet_plan_and_preprocess ... --align rigid` (or pass -p with aligned plans, e.g. the demo's "
            "nnUNetPlansAligned)")
