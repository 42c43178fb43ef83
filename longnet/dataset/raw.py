"""The raw dataset: nnU-Net v2 layout plus the optional longitudinal files (patientsTr.json, visitsTr.csv)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from longnet.io.case_names import check_case_id_collisions
from longnet.dataset.labels import LabelManager
from longnet.dataset.readers import NaturalImage2DIO
from longnet.dataset.stray_files import refuse_stray_files
from longnet.errors import DatasetError, LongnetError
from longnet.utils.files import load_json

_CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def validate_case_id(case_id: str, source: str | Path | None = None) -> str:
    """Refuse ids that could escape the dataset folder or confuse file naming."""
    if not isinstance(case_id, str) or not case_id or ".." in case_id or "/" in case_id or "\\" in case_id \
            or not _CASE_ID_RE.match(case_id):
        raise DatasetError(f"invalid case id {case_id!r}: ids may contain letters, digits, '_', '-', '.' "
                           "(not '..' or path separators) and must not start with '.'", source)
    return case_id


def missing_channels(present, num_channels: int, file_ending: str) -> list[int]:
    """Channel indices whose file is missing. A natural-image file (.png/.bmp/.tif) may hold several channels
    (RGB = 3), so there files 0..k-1 are enough here; the reader then checks the total channel count."""
    present = sorted(present)
    missing = [c for c in range(num_channels) if c not in present]
    if missing and NaturalImage2DIO().supports(file_ending) and present == list(range(len(present))):
        return []
    return missing


@dataclass
class Case:
    id: str
    images: list[Path]
    label: Path | None
    subject: str
    days: float
    visit_index: int
    meta: dict = field(default_factory=dict)
    days_known: bool = False  # True when visits{Tr,Ts}.csv gave the day (else days = the visit's index)


class RawDataset:
    """Index of a raw dataset folder. Structural problems raise DatasetError naming the file."""

    def __init__(self, folder: str | Path, side: str = "Tr"):
        self.folder = Path(folder)
        self.side = side
        if not self.folder.is_dir():
            raise DatasetError("dataset folder not found", self.folder)
        self.dataset_json_path = self.folder / "dataset.json"
        self.dataset_json: dict = load_json(self.dataset_json_path)
        self._check_dataset_json()
        self.label_manager = LabelManager.from_dataset_json(self.dataset_json, str(self.dataset_json_path))
        self.cases: dict[str, Case] = self._index_cases()
        self.subjects: dict[str, list[str]] = self._load_subjects()
        self._load_visits()

    # -- dataset.json ---------------------------------------------------------------------------------
    def _check_dataset_json(self) -> None:
        dj, src = self.dataset_json, self.dataset_json_path
        if not isinstance(dj, dict):
            raise DatasetError("must contain a JSON object", src)
        if "channel_names" not in dj and "modality" in dj:
            dj["channel_names"] = dj["modality"]
        for key in ("channel_names", "labels", "file_ending"):
            if key not in dj:
                raise DatasetError(f"missing required key '{key}'", src)
        if not isinstance(dj["channel_names"], dict) or not dj["channel_names"]:
            raise DatasetError("'channel_names' must be a non-empty mapping like {\"0\": \"T1\"}", src)
        keys = sorted(dj["channel_names"].keys(), key=lambda k: int(k) if str(k).isdigit() else -1)
        if [str(k) for k in keys] != [str(i) for i in range(len(keys))]:
            raise DatasetError(f"'channel_names' keys must be \"0\", \"1\", ... consecutively, got {list(dj['channel_names'])}", src)
        if not isinstance(dj["file_ending"], str) or not dj["file_ending"].startswith("."):
            raise DatasetError(f"'file_ending' must be a string like \".nii.gz\", got {dj['file_ending']!r}", src)
        if "numTraining" in dj and not isinstance(dj["numTraining"], int):
            raise DatasetError("'numTraining' must be an integer", src)

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    @property
    def num_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    @property
    def channel_names(self) -> list[str]:
        cn = self.dataset_json["channel_names"]
        return [cn[str(i)] if str(i) in cn else cn[i] for i in range(len(cn))]

    @property
    def images_dir(self) -> Path:
        return self.folder / f"images{self.side}"

    @property
    def labels_dir(self) -> Path:
        return self.folder / f"labels{self.side}"

    # -- cases ----------------------------------------------------------------------------------------
    def _index_cases(self) -> dict[str, Case]:
        ending = self.file_ending
        if not self.images_dir.is_dir():
            raise DatasetError(f"images{self.side}/ folder not found", self.images_dir)
        refuse_stray_files(self.images_dir, ending, "image")  # first: the root cause of any missing-file error
        refuse_stray_files(self.labels_dir, ending, "label")
        pat = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
        channels: dict[str, dict[int, Path]] = {}
        for p in sorted(self.images_dir.iterdir()):
            if p.name.startswith("."):
                continue
            m = pat.match(p.name)
            if not m:
                if p.name.endswith(ending):
                    raise DatasetError(f"image file name must be CASE_CCCC{ending} (4-digit channel index)", p)
                continue
            cid = validate_case_id(m.group(1), p)
            channels.setdefault(cid, {})[int(m.group(2))] = p
        cases: dict[str, Case] = {}
        n = self.num_channels
        for cid in sorted(channels):
            chans = channels[cid]
            missing = missing_channels(chans, n, ending)
            if missing:
                raise DatasetError(f"case {cid!r} is missing channel file(s) "
                                   + ", ".join(f"{cid}_{c:04d}{ending}" for c in missing), self.images_dir)
            extra = sorted(c for c in chans if c >= n)
            if extra:
                raise DatasetError(f"case {cid!r} has channel {extra[0]:04d} but dataset.json declares {n} channel(s)",
                                   chans[extra[0]])
            label = self.labels_dir / f"{cid}{ending}"
            cases[cid] = Case(cid, [chans[c] for c in sorted(chans)], label if label.is_file() else None, cid, 0.0, 0)
        if self.labels_dir.is_dir():
            for p in sorted(self.labels_dir.iterdir()):
                if p.name.endswith(ending) and not p.name.startswith("."):
                    cid = p.name[: -len(ending)]
                    if cid not in cases:
                        raise DatasetError(f"label file has no image (expected images{self.side}/{cid}_0000{ending})", p)
        if not cases:
            raise DatasetError(f"no images matching CASE_CCCC{ending} found", self.images_dir)
        if self.side == "Tr":
            check_case_id_collisions(cases, lambda c: cases[c].images[0])
            self._refuse_test_cases(pat, cases)
        return cases

    def _refuse_test_cases(self, pattern: re.Pattern, cases: dict[str, Case]) -> None:
        """A case in both imagesTr/ and imagesTs/ would be trained on and then tested on."""
        test_dir = self.folder / "imagesTs"
        if not test_dir.is_dir():
            return
        for p in sorted(test_dir.iterdir()):
            m = pattern.match(p.name)
            if m and m.group(1) in cases:
                raise DatasetError(f"case {m.group(1)!r} is in both imagesTr/ and imagesTs/: a test case must not be "
                                   f"trained on; remove it from one of them", p)

    # -- longitudinal ---------------------------------------------------------------------------------
    def _load_subjects(self) -> dict[str, list[str]]:
        path = self.folder / f"patients{self.side}.json"
        if not path.is_file():
            return {cid: [cid] for cid in self.cases}
        raw = load_json(path)
        if not isinstance(raw, dict):
            raise DatasetError("must be a JSON object {subject: [case, ...]}", path)
        seen: dict[str, str] = {}
        subjects: dict[str, list[str]] = {}
        for subj, cases in raw.items():
            validate_case_id(subj, path)
            if not isinstance(cases, list) or not cases:
                raise DatasetError(f"subject {subj!r} must map to a non-empty list of case ids", path)
            for cid in cases:
                validate_case_id(cid, path)
                if cid not in self.cases:
                    raise DatasetError(f"subject {subj!r} lists case {cid!r}, which has no images in images{self.side}/", path)
                if cid in seen and seen[cid] == subj:
                    raise DatasetError(f"case {cid!r} is listed twice under subject {subj!r}", path)
                if cid in seen:
                    raise DatasetError(f"case {cid!r} is listed under two subjects ({seen[cid]!r} and {subj!r})", path)
                seen[cid] = subj
            subjects[subj] = list(cases)
        for cid in self.cases:
            if cid not in seen:  # unlisted cases are their own subject
                if cid in subjects:
                    raise DatasetError(f"case {cid!r} is not listed but a subject has the same name; list it "
                                       "under a subject (ids of unlisted cases double as their subject names)", path)
                subjects[cid] = [cid]
        for subj, cases in subjects.items():
            for i, cid in enumerate(cases):
                self.cases[cid].subject = subj
                self.cases[cid].visit_index = i
                self.cases[cid].days = float(i)
        return subjects

    def _load_visits(self) -> None:
        path = self.folder / f"visits{self.side}.csv"
        if not path.is_file():
            return
        from longnet.io.visits import cell_value, read_visit_rows

        try:
            rows = read_visit_rows(path)
        except LongnetError as e:
            raise DatasetError(e.message, path) from None
        if not rows or "days" not in rows[0][1]:
            raise DatasetError("must have a header with at least the columns 'case' and 'days'", path)
        seen = set()
        for line, row in rows:
            cid = (row.get("case") or "").strip()
            if cid not in self.cases:
                raise DatasetError(f"line {line}: case {cid!r} has no images in images{self.side}/", path)
            if cid in seen:
                raise DatasetError(f"line {line}: case {cid!r} appears twice", path)
            seen.add(cid)
            try:
                days = float(row["days"])
            except (TypeError, ValueError):
                raise DatasetError(f"line {line}: 'days' of case {cid!r} is missing or not a number ({row['days']!r})", path) from None
            if not math.isfinite(days):
                raise DatasetError(f"line {line}: 'days' of case {cid!r} is not finite", path)
            self.cases[cid].days = days
            self.cases[cid].days_known = True
            meta = {k: cell_value(v) for k, v in row.items() if k not in ("case", "days")}
            self.cases[cid].meta = meta
        missing = [c for c in self.cases if c not in seen]
        if missing:
            raise DatasetError(f"{len(missing)} case(s) have no row (one row per case is required): "
                               + ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else ""), path)
        for subj, cases in self.subjects.items():
            days = [self.cases[c].days for c in cases]
            for a, b, ca, cb in zip(days, days[1:], cases, cases[1:]):
                if not b > a:
                    raise DatasetError(f"subject {subj!r}: days must increase along its visits, but {cb!r} "
                                       f"({b}) does not come after {ca!r} ({a})", path)

    # -- views ----------------------------------------------------------------------------------------
    @property
    def labelled_cases(self) -> list[str]:
        return [c for c, v in self.cases.items() if v.label is not None]

    @property
    def unlabelled_cases(self) -> list[str]:
        return [c for c, v in self.cases.items() if v.label is None]

    @property
    def has_subject_table(self) -> bool:
        return (self.folder / f"patients{self.side}.json").is_file()

    def unlabelled_warnings(self) -> list[tuple[Path, str]]:
        """(image file, message) for each unlabelled case of an nnU-Net-style dataset (labels, no patientsTr.json):
        there a missing label file is more likely forgotten than meant as an unlabelled visit."""
        if self.side != "Tr" or self.has_subject_table or not self.labelled_cases:
            return []
        return [(self.cases[c].images[0], f"case {c!r} has no label file (labels{self.side}/{c}{self.file_ending}): "
                                          "treated as an unlabelled visit") for c in self.unlabelled_cases]

    @property
    def is_longitudinal(self) -> bool:
        return any(len(v) > 1 for v in self.subjects.values())
