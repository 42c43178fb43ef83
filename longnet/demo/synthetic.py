"""Synthetic longitudinal brain-like dataset, generated in the raw format so the demo and tests need no downloads.

Every shape is an analytic function of *canonical* (subject) coordinates. Each visit samples those
functions through its own small rigid transform, so image and label stay voxel-exact aligned while
visits are misaligned with each other, as real follow-up scans are. Everything is drawn from
seeded ``numpy.random.Generator`` streams (one per subject): the same seed gives byte-identical files.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from longnet.utils.files import atomic_path, save_json

DEFAULT_DATASET_ID = 990
DEFAULT_DATASET_NAME = "LongDemo"
CHANNELS = ("T1", "FLAIR")
_DESIGN_EXTENT = 34.0  # mean volume extent (canonical mm) the anatomy constants below were designed for
LABELS = {"background": 0, "ventricles": 1, "lesion": 2}
#: Subject-level `converter` = 1 if the noiseless score falls below this within CONVERTER_HORIZON_DAYS.
CONVERTER_THRESHOLD = 22.0
CONVERTER_HORIZON_DAYS = 2 * 365.0
#: Relative baseline ventricle size per unit of yearly growth rate (rate 0.02–0.16 → size ×0.895–1.105).
VENT_SIZE_RATE_COUPLING = 1.5

# Tissue intensities per channel (T1, FLAIR): CSF is dark in both, the lesion is bright in FLAIR only,
# so the two foreground classes are told apart by contrast and not just by position.
_INTENSITY = {
    "skull": (1.00, 0.70),
    "csf": (0.10, 0.06),
    "brain": (0.70, 0.50),
    "ventricle": (0.12, 0.10),
    "lesion": (0.45, 1.00),
}


@dataclass
class _Subject:
    """Per-subject anatomy and progression rates (fixed across visits). Lengths in canonical mm."""

    head_radii: np.ndarray           # (z, y, x)
    vent_centre: np.ndarray          # offset from head centre
    vent_radii: np.ndarray           # one lobe
    vent_sep: float                  # half the lobe separation along x
    vent_rate: float                 # linear ventricle growth per year
    lesion_centre: np.ndarray
    lesion_r0: float                 # radius at onset
    lesion_growth: float             # radius growth per year
    lesion_onset: float              # days (negative: already present at baseline)
    wobble: list = field(default_factory=list)  # (freq vec, phase, amplitude) sinusoids deforming shapes
    texture: list = field(default_factory=list)  # sinusoids giving grey/white-matter-like brain texture


@dataclass
class DemoVisit:
    """One row of visits{Tr,Ts}.csv (plus where its files went)."""

    case: str
    subject: str
    days: float
    score: float
    converter: int
    labelled: bool
    side: str


def _sinusoids(rng: np.random.Generator, n: int, wavelength: tuple[float, float], amp: float) -> list:
    out = []
    for _ in range(n):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / rng.uniform(*wavelength)
        out.append((direction * k, rng.uniform(0, 2 * np.pi), amp * rng.uniform(0.5, 1.0)))
    return out


def _eval_sinusoids(terms: list, pts: np.ndarray) -> np.ndarray:
    """Sum of plane waves at points pts (3, N); cheap and smooth."""
    acc = np.zeros(pts.shape[1], dtype=np.float64)
    for kvec, phase, amp in terms:
        acc += amp * np.sin(kvec @ pts + phase)
    return acc


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Rotation of a random axis by up to max_deg (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    theta = np.deg2rad(rng.uniform(-max_deg, max_deg))
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def _make_subject(rng: np.random.Generator, extent: np.ndarray) -> _Subject:
    half = extent / 2.0
    head = half * rng.uniform(0.80, 0.90, size=3)
    vent_radii = head * np.array([0.30, 0.36, 0.17]) * rng.uniform(0.9, 1.1, size=3)
    vent_centre = np.array([rng.uniform(-0.05, 0.08), rng.uniform(-0.08, 0.05), 0.0]) * head
    vent_sep = head[2] * rng.uniform(0.27, 0.32)
    # lesion in the white matter: beside the front or back tip of a ventricle, inside the brain
    side_x, side_y = rng.choice([-1.0, 1.0], size=2)
    lesion_centre = np.array([rng.uniform(-0.25, 0.25), side_y * rng.uniform(0.42, 0.52),
                              side_x * rng.uniform(0.28, 0.42)]) * head
    vent_rate = rng.uniform(0.02, 0.16)
    # faster-growing ventricles start larger (±10%), as baseline atrophy predicts decline in real cohorts: a single
    # scan then carries some signal about the future (the `converter` target of the probing trainers)
    vent_radii = vent_radii * (1.0 + VENT_SIZE_RATE_COUPLING * (vent_rate - 0.09))
    return _Subject(
        head_radii=head, vent_centre=vent_centre, vent_radii=vent_radii, vent_sep=vent_sep,
        vent_rate=vent_rate,
        lesion_centre=lesion_centre, lesion_r0=rng.uniform(2.8, 3.6),
        lesion_growth=rng.uniform(0.4, 2.2),
        lesion_onset=rng.uniform(-500.0, 500.0),
        wobble=_sinusoids(rng, 4, (10.0, 24.0), 0.10),
        texture=_sinusoids(rng, 6, (5.0, 12.0), 0.06),
    )


def _structures(subj: _Subject, days: float) -> tuple[float, float]:
    """Ventricle scale factor and lesion radius (0 = absent) at a given day."""
    years = days / 365.0
    vent_scale = 1.0 + subj.vent_rate * years
    if days < subj.lesion_onset:
        return vent_scale, 0.0
    r = subj.lesion_r0 + subj.lesion_growth * (days - subj.lesion_onset) / 365.0
    return vent_scale, float(min(r, 1.9 * subj.lesion_r0))


def _true_score(subj: _Subject, days: float) -> float:
    """Noiseless health score (MMSE-like, 0..30): declines with ventricle growth and lesion load."""
    vent_scale, lr = _structures(subj, days)
    lesion_load = (4.0 / 3.0) * np.pi * lr ** 3 / 1000.0  # cm^3-ish
    return float(np.clip(29.5 - 7.0 * (vent_scale ** 3 - 1.0) - 2.5 * lesion_load, 0.0, 30.0))


def _soft(signed: np.ndarray, width: float = 0.6) -> np.ndarray:
    """Partial-volume occupancy from a signed distance-like value (negative inside)."""
    return 1.0 / (1.0 + np.exp(np.clip(signed / width, -30, 30)))


def _render_visit(subj: _Subject, days: float, shape: tuple[int, int, int], spacing: np.ndarray,
                  rng: np.random.Generator, noise_rng: np.random.Generator, noise: float, max_rot_deg: float,
                  max_shift_vox: float) -> tuple[np.ndarray, np.ndarray]:
    """Images (2, Z, Y, X) float32 and label (Z, Y, X) uint8 of one visit."""
    rot = _rotation(rng, max_rot_deg)
    shift = rng.uniform(-max_shift_vox, max_shift_vox, size=3) * spacing
    scanner = rng.uniform(0.8, 1.25, size=2)
    bias_terms = _sinusoids(rng, 3, (60.0, 120.0), 0.10)

    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    centre = (np.asarray(shape, float) - 1) / 2.0
    scanner_pts = (grid - centre[:, None]) * spacing[:, None]          # scanner frame (canonical mm)
    pts = rot.T @ (scanner_pts - shift[:, None])                        # subject frame
    wob = _eval_sinusoids(subj.wobble, pts)

    # head: scaled radius r_head; skull = outer shell, brain = inside
    r_head = np.sqrt(((pts / subj.head_radii[:, None]) ** 2).sum(0)) + 0.12 * wob
    mean_head = float(np.mean(subj.head_radii))
    head_occ = _soft((r_head - 1.0) * mean_head)
    inner_skull_occ = _soft((r_head - 0.88) * mean_head)
    brain_occ = _soft((r_head - 0.80) * mean_head)

    vent_scale, lesion_r = _structures(subj, days)
    vr = subj.vent_radii * vent_scale
    vent_signed = np.full(pts.shape[1], np.inf)
    for sgn in (-1.0, 1.0):
        c = subj.vent_centre + np.array([0.0, 0.0, sgn * subj.vent_sep * vent_scale ** 0.5])
        d = np.sqrt((((pts - c[:, None]) / vr[:, None]) ** 2).sum(0))
        vent_signed = np.minimum(vent_signed, (d - 1.0 + wob) * float(np.mean(vr)))
    vent_occ = _soft(vent_signed) * brain_occ

    if lesion_r > 0:
        d = np.linalg.norm(pts - subj.lesion_centre[:, None], axis=0)
        lesion_signed = d - lesion_r * (1.0 + 0.8 * wob)
        lesion_occ = _soft(lesion_signed) * brain_occ * (1.0 - vent_occ)
    else:
        lesion_signed = np.full(pts.shape[1], np.inf)
        lesion_occ = np.zeros(pts.shape[1])

    label = np.zeros(pts.shape[1], dtype=np.uint8)
    label[(vent_signed < 0) & (brain_occ > 0.5)] = 1
    label[(lesion_signed < 0) & (brain_occ > 0.5) & (label == 0)] = 2

    texture = 1.0 + _eval_sinusoids(subj.texture, pts)
    skull_occ = np.clip(head_occ - inner_skull_occ, 0.0, 1.0)
    csf_occ = np.clip(inner_skull_occ - brain_occ, 0.0, 1.0)
    tissue_occ = np.clip(brain_occ - vent_occ - lesion_occ, 0.0, 1.0)
    bias = np.exp(_eval_sinusoids(bias_terms, scanner_pts))
    images = np.empty((2, pts.shape[1]), dtype=np.float32)
    for ch in range(2):
        clean = (skull_occ * _INTENSITY["skull"][ch] + csf_occ * _INTENSITY["csf"][ch]
                 + tissue_occ * _INTENSITY["brain"][ch] * texture
                 + vent_occ * _INTENSITY["ventricle"][ch] + lesion_occ * _INTENSITY["lesion"][ch])
        clean = clean * bias
        # Rician magnitude noise: |signal + complex gaussian|
        n1, n2 = noise_rng.normal(0.0, noise, size=(2, clean.size))
        mag = np.sqrt((clean + n1) ** 2 + n2 ** 2)
        images[ch] = (mag * scanner[ch] * 1000.0).astype(np.float32)
    return images.reshape((2, *shape)), label.reshape(shape)


def _write(arr: np.ndarray, dest: Path, spacing_zyx: np.ndarray) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(s) for s in spacing_zyx[::-1]])
    extent = (np.asarray(arr.shape[::-1]) - 1) * spacing_zyx[::-1]
    img.SetOrigin([float(-e / 2.0) for e in extent])
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    with atomic_path(dest, suffix=".nii.gz") as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)


def dataset_folder_name(dataset_id: int = DEFAULT_DATASET_ID, name: str = DEFAULT_DATASET_NAME) -> str:
    return f"Dataset{int(dataset_id):03d}_{name}"


def generate_demo_dataset(out_dir: str | Path, n_subjects_train: int = 12, n_subjects_test: int = 4,
                          shape: Sequence[int] = (32, 40, 32), seed: int = 0,
                          dataset_id: int = DEFAULT_DATASET_ID, name: str = DEFAULT_DATASET_NAME,
                          spacing: Sequence[float] = (1.2, 1.0, 1.0), label_fraction: float = 0.6,
                          noise: float = 0.035, max_rot_deg: float = 3.0, max_shift_vox: float = 1.5,
                          min_visits: int = 2, max_visits: int = 6, progress: bool = False,
                          anatomy_time_scale: float = 1.0) -> Path:
    """Write `out_dir/DatasetXXX_Name/` and return its path. `shape`/`spacing` are in (z, y, x) order.

    Training subjects have ~label_fraction of their visits labelled (always the first one); every
    test visit is labelled so the test split can be evaluated. `progress` shows a tqdm bar.
    `anatomy_time_scale` < 1 slows the anatomy's clock (ventricle growth, lesion onset and growth, hence the score)
    against the visit dates: 0.1 gives a cohort whose structures barely change between visits, the setting that
    temporal-consistency methods assume; 1 is the default cohort, unchanged.
    """
    if anatomy_time_scale < 0:
        raise ValueError("anatomy_time_scale must be >= 0")
    if not 1 <= min_visits <= max_visits:
        raise ValueError("need 1 <= min_visits <= max_visits")
    shape = tuple(int(s) for s in shape)
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    # Shapes are designed in "canonical mm" for a ~34 mm wide volume; scaling to the real extent keeps the
    # anatomy's size in voxels independent of the spacing the files declare.
    unit_spacing = spacing_arr / (float(np.mean(np.asarray(shape, float) * spacing_arr)) / _DESIGN_EXTENT)
    extent = np.asarray(shape, float) * unit_spacing
    folder = Path(out_dir) / dataset_folder_name(dataset_id, name)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)

    visits: list[DemoVisit] = []
    patients: dict[str, dict[str, list[str]]] = {"Tr": {}, "Ts": {}}
    written: set[Path] = set()
    n_total = n_subjects_train + n_subjects_test
    subjects = range(n_total)
    if progress:
        from tqdm import tqdm

        subjects = tqdm(subjects, desc="demo dataset", unit="subject", leave=False)
    for s in subjects:
        side = "Tr" if s < n_subjects_train else "Ts"
        subj_id = f"sub{s:03d}"
        # one stream per subject (anatomy, visits) and one for voxel noise: subject k is the same whatever
        # the volume shape or the number of subjects asked for
        anat_seq, noise_seq = np.random.SeedSequence([seed, s]).spawn(2)
        rng, noise_rng = np.random.default_rng(anat_seq), np.random.default_rng(noise_seq)
        subj = _make_subject(rng, extent)
        n_visits = int(rng.integers(min_visits, max_visits + 1))
        days = np.concatenate([[0.0], np.cumsum(np.round(rng.uniform(60, 400, size=n_visits - 1)))])
        anatomy_days = days * anatomy_time_scale
        converter = int(_true_score(subj, CONVERTER_HORIZON_DAYS * anatomy_time_scale) < CONVERTER_THRESHOLD)
        labelled = rng.random(n_visits) < label_fraction
        labelled[0] = True
        if side == "Ts":
            labelled[:] = True
        patients[side][subj_id] = []
        for v in range(n_visits):
            case = f"{subj_id}_v{v}"
            images, label = _render_visit(subj, float(anatomy_days[v]), shape, unit_spacing, rng, noise_rng, noise,
                                          max_rot_deg, max_shift_vox)
            score = float(np.clip(_true_score(subj, float(anatomy_days[v])) + rng.normal(0, 0.6), 0, 30))
            targets = [(images[ch], folder / f"images{side}" / f"{case}_{ch:04d}.nii.gz") for ch in range(len(images))]
            if labelled[v]:
                targets.append((label, folder / f"labels{side}" / f"{case}.nii.gz"))
            for arr, dest in targets:
                _write(arr, dest, spacing_arr)
                written.add(dest)
            patients[side][subj_id].append(case)
            visits.append(DemoVisit(case, subj_id, float(days[v]), round(score, 2), converter, bool(labelled[v]), side))

    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):  # leftovers of an earlier, larger generation
        for stale in set((folder / sub).glob("*.nii.gz")) - written:
            stale.unlink()
    _write_metadata(folder, name, seed, patients, visits, anatomy_time_scale)
    return folder


def _write_metadata(folder: Path, name: str, seed: int, patients: dict[str, dict[str, list[str]]],
                    visits: list[DemoVisit], anatomy_time_scale: float = 1.0) -> None:
    """dataset.json, patients{Tr,Ts}.json and visits{Tr,Ts}.csv."""
    n_train_cases = sum(len(c) for c in patients["Tr"].values())
    save_json({
        "name": name,
        "description": f"synthetic longitudinal brain-like demo dataset (longnet, seed {seed}"
                       + (f", anatomy time scale {anatomy_time_scale:g})" if anatomy_time_scale != 1.0 else ")"),
        "channel_names": {str(i): c for i, c in enumerate(CHANNELS)},
        "labels": dict(LABELS),
        "numTraining": n_train_cases,
        "file_ending": ".nii.gz",
        "longitudinal": {"score": "health score (0-30, higher is healthier)",
                         "converter": f"1 if the score falls below {CONVERTER_THRESHOLD} within "
                                      f"{int(CONVERTER_HORIZON_DAYS)} days of baseline"},
    }, folder / "dataset.json")
    for side in ("Tr", "Ts"):
        save_json(patients[side], folder / f"patients{side}.json")
        with atomic_path(folder / f"visits{side}.csv") as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["case", "days", "score", "converter"])
                for v in visits:
                    if v.side == side:
                        w.writerow([v.case, f"{v.days:g}", f"{v.score:.2f}", v.converter])
