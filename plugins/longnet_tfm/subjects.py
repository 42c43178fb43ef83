"""Which visits a TFM prediction uses: subjects from patientsTs.json, days from a visits CSV, the target
(last listed visit, or the visit at `--target-days`) and its T context slots."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longnet.api import LongnetError, load_json, validate_case_id, visit_days


@dataclass
class ForecastJob:
    """One forecast: `context` = T slots (left-padded None), `target` = the visit to forecast (its output name)."""

    subject: str
    context: list[str | None]
    context_days: list[float | None]
    target: str
    target_days: float
    target_exists: bool

    @property
    def last_context(self) -> str:
        return [c for c in self.context if c is not None][-1]


def load_patients(path: str | Path | None) -> dict[str, list[str]]:
    if not path:
        raise LongnetError("TFM forecasting needs --patients patientsTs.json ({subject: [cases in time order]})")
    data = load_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise LongnetError("patients file must map subject -> [case, case, ...]", path)
    return {str(s): [validate_case_id(str(c), path) for c in cs] for s, cs in data.items()}


def load_days(visits_csv: str | Path | None, patients: dict[str, list[str]]) -> dict[str, float]:
    """`days` per case from the visits CSV; without one (or without a day), the visit index (the raw format's
    fallback)."""
    days = {c: float(i) for cs in patients.values() for i, c in enumerate(cs)}
    recorded = visit_days(visits_csv)
    return {c: recorded.get(c, d) for c, d in days.items()}


def default_visits_csv(patients_path: str | Path | None) -> Path | None:
    """visitsTs.csv (or visitsTr.csv) next to the patients file, when present."""
    if not patients_path:
        return None
    folder = Path(patients_path).parent
    stem = Path(patients_path).name.replace("patients", "visits").replace(".json", ".csv")
    for name in (stem, "visitsTs.csv", "visitsTr.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def plan_jobs(patients: dict[str, list[str]], days: dict[str, float], n_context: int,
              target_days: float | None = None, tolerance: float = 0.5) -> tuple[list[ForecastJob], list[str]]:
    """(jobs, skipped-subject messages). Context = the last `n_context` visits strictly before the target."""
    jobs, skipped = [], []
    for subject, cases in patients.items():
        order = sorted(cases, key=lambda c: (days[c], cases.index(c)))
        if target_days is None:
            if len(order) < 2:
                skipped.append(f"{subject}: only {len(order)} visit(s), nothing to forecast from")
                continue
            target, t_days, exists = order[-1], days[order[-1]], True
            earlier = order[:-1]
        else:
            at = [c for c in order if abs(days[c] - target_days) <= tolerance]
            earlier = [c for c in order if days[c] < target_days - tolerance]
            if not earlier:
                skipped.append(f"{subject}: no visit before day {target_days:g}")
                continue
            exists = bool(at)
            target = at[0] if at else validate_case_id(f"{subject}_day{target_days:g}".replace(".", "p"))
            t_days = days[at[0]] if at else float(target_days)
        ctx = earlier[-n_context:]
        pad = [None] * (n_context - len(ctx))
        jobs.append(ForecastJob(subject, pad + ctx, [None] * len(pad) + [days[c] for c in ctx], target, t_days,
                                exists))
    return jobs, skipped
