"""Intra-subject alignment: bring every visit of a subject into the grid of its reference visit.

Registration (SimpleITK): Mattes mutual information on channel 0, multi-resolution (shrink 4/2/1 with
smoothing), random sampling with a fixed seed and a fixed thread count so that a given input always gives the
same transform. Rigid = Euler3D initialised by the intensity centres (MOMENTS; the visits' fields of view
differ, their heads' centres of mass do not), affine = rigid then affine, deformable = affine then a coarse
B-spline. Images are resampled linearly (0 outside the moving field of view, which the nonzero crop then
treats as outside), label maps nearest-neighbour.

Transform convention (ITK's): a stored transform maps points of the REFERENCE grid to points of the VISIT
(fixed -> moving), which is what `sitk.Resample(visit, reference, transform)` needs. Mapping a prediction
back to the visit therefore uses the inverse; `map_back_to_visit` does that, inverting the B-spline part of a
deformable transform numerically. Transforms are written as ITK text `.tfm` files (never pickles).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from longnet.errors import LongnetError
from longnet.utils.files import atomic_path

ALIGN_MODES = ("none", "rigid", "affine", "deformable")
_SUFFIX_RE = re.compile(r"_aligned(Rigid|Affine|Deformable)$")


@dataclass(frozen=True)
class RegistrationSettings:
    """Defaults sized so one 256×256×24 pair registers rigidly in seconds on two CPU cores.

    `threads` is 1: with 2 threads ITK's metric sums come back in varying order and the same input gave
    transforms differing in the 9th digit between runs; one thread makes the result a function of the input
    and the seed alone (preprocessing parallelises over subjects instead). See `_threads` for how it is set."""
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas: tuple[float, ...] = (2.0, 1.0, 0.0)  # voxels of each level
    sampling_percentage: float = 0.15
    max_samples: int = 100_000  # per level: bounds the time of the full-resolution level of large images
    min_samples: int = 5_000  # per level: coarse levels of small images would otherwise get a few hundred
    histogram_bins: int = 32
    iterations: int = 100
    seed: int = 12345
    threads: int = 1
    bspline_grid_spacing_mm: float = 60.0
    bias_correction: bool = True  # N4 on the registration copies only; the saved images keep their intensities
    bias_voxel_mm: float = 6.0
    bias_iterations: tuple[int, ...] = (20, 20, 20)  # per N4 fitting level (two levels: p19 off by 1.02 voxels)
    bspline_iterations: int = 20  # per level; L-BFGS-B may use two metric evaluations per iteration
    bspline_max_samples: int = 20_000  # every sample costs 4³ control-point weights per parameter update


# -- geometry helpers ---------------------------------------------------------------------------------------
def geometry_of(img: sitk.Image) -> dict:
    """Grid of an image in SimpleITK (x, y, z) order, size included (needed to rebuild a visit's grid)."""
    return {"spacing": list(img.GetSpacing()), "origin": list(img.GetOrigin()),
            "direction": list(img.GetDirection()), "size": [int(s) for s in img.GetSize()]}


def image_from_array(arr: np.ndarray, geometry: dict) -> sitk.Image:
    """A Z×Y×X numpy array on the grid described by `geometry` (spacing/origin/direction in x, y, z)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing([float(s) for s in geometry["spacing"]])
    img.SetOrigin([float(s) for s in geometry["origin"]])
    img.SetDirection([float(s) for s in geometry["direction"]])
    return img


def _grid_size(geometry: dict) -> list[int]:
    if "size" in geometry:
        return [int(s) for s in geometry["size"]]
    if "shape" in geometry:  # numpy z, y, x
        return [int(s) for s in geometry["shape"]][::-1]
    raise ValueError("geometry needs 'size' (x, y, z) or 'shape' (z, y, x) to define a grid")


# -- registration --------------------------------------------------------------------------------------------
@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run SimpleITK with `n` threads for the duration of one registration, then restore the global default.

    The registration method's own SetNumberOfThreads(1) is set as well, but in SimpleITK 2.5 it does not reach
    the Mattes metric's threader: two runs still differed (~1e-11) until the global default was 1 too. The
    change is scoped to this block; preprocessing workers are separate processes, so nothing else is affected."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _bias_corrected(img: sitk.Image, voxel_mm: float, iterations: Sequence[int] = (20, 20, 20)) -> sitk.Image:
    """`img` divided by its N4 bias field, fitted on a ~`voxel_mm` copy within an Otsu head mask.

    Why: the visits come from different scanners/sessions with different coil shading; mutual information
    assumes one intensity relationship over the whole image, and the shading pulls the optimum off. On the
    Ljubljana pairs this brought the mean error against the shipped transforms from 1.13/1.14 to 0.92/0.79
    study-1 voxels for the two patients whose studies come from different scanners (patient03/19). Fitting at
    ~6 mm costs about 2 s per 256×256×24 image; two fitting levels instead of three left patient19 at 1.02."""
    if (sitk.GetArrayViewFromImage(img) < 0).mean() > 0.01:  # N4 works on log intensities: MR, not CT
        return img
    shrink = [max(1, int(round(voxel_mm / sp))) for sp in img.GetSpacing()]
    small = sitk.Shrink(sitk.Maximum(img, 0.0), shrink)
    try:
        n4 = sitk.N4BiasFieldCorrectionImageFilter()
        n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
        n4.Execute(small, sitk.OtsuThreshold(small, 0, 1, 200))
        return sitk.Cast(img / sitk.Exp(n4.GetLogBiasFieldAsImage(img)), sitk.sitkFloat32)
    except RuntimeError:  # e.g. an empty mask: register the uncorrected image
        return img


def _method(settings: RegistrationSettings, fixed: sitk.Image, levels: Sequence[int],
            sigmas: Sequence[float], max_samples: int | None = None) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(settings.threads)  # not enough on its own for determinism: see _threads
    reg.SetMetricAsMattesMutualInformation(settings.histogram_bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    cap = settings.max_samples if max_samples is None else max_samples
    pct = []
    for f in levels:  # the percentage, but at least min_samples (small images) and at most `cap` samples
        n = float(np.prod([max(1, s // f) for s in fixed.GetSize()]))
        pct.append(min(1.0, max(settings.sampling_percentage, settings.min_samples / n), cap / n))
    reg.SetMetricSamplingPercentagePerLevel(pct, settings.seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel(list(levels))
    reg.SetSmoothingSigmasPerLevel(list(sigmas))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return reg


def _gradient_descent(reg: sitk.ImageRegistrationMethod, iterations: int) -> None:
    # the first step is estimated per level to move voxels by about one voxel of that level (ITK's default
    # maximum physical step): large steps on the coarse levels, fine ones at full resolution
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=iterations,
                                                 relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8,
                                                 estimateLearningRate=reg.Once)
    reg.SetOptimizerScalesFromPhysicalShift()


def _rigid(fixed: sitk.Image, moving: sitk.Image, s: RegistrationSettings) -> sitk.Euler3DTransform:
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = _method(s, fixed, s.shrink_factors, s.smoothing_sigmas)
    _gradient_descent(reg, s.iterations)
    tx = sitk.Euler3DTransform(init)
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(fixed, moving)
    return tx


def _affine(fixed: sitk.Image, moving: sitk.Image, s: RegistrationSettings) -> sitk.AffineTransform:
    rigid = _rigid(fixed, moving, s)
    tx = sitk.AffineTransform(3)
    tx.SetCenter(rigid.GetCenter())
    tx.SetMatrix(rigid.GetMatrix())
    tx.SetTranslation(rigid.GetTranslation())
    reg = _method(s, fixed, s.shrink_factors[-2:], s.smoothing_sigmas[-2:])
    _gradient_descent(reg, s.iterations)
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(fixed, moving)
    return tx


def _deformable(fixed: sitk.Image, moving: sitk.Image, s: RegistrationSettings) -> sitk.CompositeTransform:
    affine = _affine(fixed, moving, s)
    extent = [sz * sp for sz, sp in zip(fixed.GetSize(), fixed.GetSpacing())]
    mesh = [max(1, int(round(e / s.bspline_grid_spacing_mm))) for e in extent]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    reg = _method(s, fixed, s.shrink_factors[-2:], s.smoothing_sigmas[-2:], s.bspline_max_samples)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=s.bspline_iterations,
                             maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=2 * s.bspline_iterations,
                             costFunctionConvergenceFactor=1e7)
    reg.SetMovingInitialTransform(affine)
    reg.SetInitialTransform(bspline, inPlace=True)
    reg.Execute(fixed, moving)
    # ITK composes moving-initial after the optimised transform: p -> affine(bspline(p)); a composite applies
    # its last transform first, hence [affine, bspline]
    return sitk.CompositeTransform([affine, bspline])


def register(fixed: sitk.Image, moving: sitk.Image, mode: str,
             settings: RegistrationSettings | None = None) -> sitk.Transform:
    """Transform mapping points of `fixed` (the reference visit) to points of `moving` (fixed -> moving)."""
    s = settings or RegistrationSettings()
    stages = {"rigid": _rigid, "affine": _affine, "deformable": _deformable}
    if mode == "none":
        return sitk.Euler3DTransform()
    if mode not in stages:
        raise ValueError(f"unknown alignment mode {mode!r} (choose from {', '.join(ALIGN_MODES)})")
    with _threads(s.threads):
        fixed, moving = sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32)
        if s.bias_correction:
            fixed = _bias_corrected(fixed, s.bias_voxel_mm, s.bias_iterations)
            moving = _bias_corrected(moving, s.bias_voxel_mm, s.bias_iterations)
        return stages[mode](fixed, moving, s)


def resample_into(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform, is_seg: bool) -> sitk.Image:
    """`image` on the grid of `reference` (transform: reference points -> image points); 0 outside its field of view."""
    interp = sitk.sitkNearestNeighbor if is_seg else sitk.sitkLinear
    return sitk.Resample(image, reference, transform, interp, 0.0, image.GetPixelID())


def align_visit(data: np.ndarray, seg: np.ndarray | None, geometry: dict, ref_channel0: np.ndarray,
                ref_geometry: dict, mode: str, settings: RegistrationSettings | None = None,
                transform: sitk.Transform | None = None) -> tuple[np.ndarray, np.ndarray | None, sitk.Transform]:
    """Register a visit (C×Z×Y×X, channel 0 drives the registration) to the reference visit and resample every
    channel (linear) and the label map (nearest) onto the reference grid. Pass `transform` to skip registering."""
    reference = image_from_array(ref_channel0.astype(np.float32, copy=False), ref_geometry)
    if transform is None:
        transform = register(reference, image_from_array(data[0], geometry), mode, settings)
    channels = [sitk.GetArrayFromImage(resample_into(image_from_array(c, geometry), reference, transform, False))
                for c in data.astype(np.float32, copy=False)]
    out_seg = None
    if seg is not None:
        out_seg = sitk.GetArrayFromImage(resample_into(image_from_array(seg[0], geometry), reference, transform,
                                                       True))[None]
    return np.stack(channels).astype(np.float32, copy=False), out_seg, transform


# -- transform files and mapping back ---------------------------------------------------------------------------
def save_transform(transform: sitk.Transform, dest: str | Path) -> None:
    """ITK text transform file, written atomically (the temp name keeps the .tfm ending ITK keys on)."""
    with atomic_path(dest, suffix=".tfm") as tmp:
        sitk.WriteTransform(transform, str(tmp))


def load_transform(path: str | Path) -> sitk.Transform:
    path = Path(path)
    if not path.is_file():
        raise LongnetError("alignment transform file not found (re-run preprocessing)", path)
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as e:
        raise LongnetError(f"unreadable transform file ({str(e).strip().splitlines()[-1][:200]})", path) from None


def _flatten(transform: sitk.Transform) -> list[sitk.Transform]:
    """Components in application order (first applied first)."""
    if transform.GetTransformEnum() == sitk.sitkComposite:
        comp = sitk.CompositeTransform(transform)
        parts = [comp.GetNthTransform(i) for i in range(comp.GetNumberOfTransforms())][::-1]
        return [p for part in parts for p in _flatten(part)]
    return [transform]


def _invert_bspline(bspline: sitk.Transform, grid: dict) -> sitk.Transform:
    """Numerical inverse of a B-spline on `grid` (the reference grid it was fitted on, at most ~2 mm)."""
    spacing = [max(float(s), 2.0) for s in grid["spacing"]]
    size = [max(2, int(np.ceil(n * s / sp))) for n, s, sp in zip(_grid_size(grid), grid["spacing"], spacing)]
    field = sitk.TransformToDisplacementField(bspline, sitk.sitkVectorFloat64, size, grid["origin"], spacing,
                                              grid["direction"])
    inverse = sitk.InvertDisplacementField(field, maximumNumberOfIterations=20, maxErrorToleranceThreshold=0.01,
                                           meanErrorToleranceThreshold=0.0001, enforceBoundaryCondition=True)
    return sitk.DisplacementFieldTransform(inverse)


def invert_transform(transform: sitk.Transform, reference_geometry: dict) -> sitk.Transform:
    """Visit -> reference. Linear parts are inverted exactly; B-spline parts numerically on the reference grid."""
    parts = _flatten(transform)
    inverses = []
    for part in parts:
        try:
            inverses.append(part.GetInverse())
        except RuntimeError:  # B-spline / displacement field: no closed-form inverse
            inverses.append(_invert_bspline(part, reference_geometry))
    # forward applies parts[0] first; the inverse applies inverse(parts[-1]) first = last in the composite list
    return inverses[0] if len(inverses) == 1 else sitk.CompositeTransform(inverses)


def map_back_to_visit(array_in_reference_grid: np.ndarray, reference_geometry: dict, visit_geometry: dict,
                      transform: sitk.Transform | str | Path, is_seg: bool) -> np.ndarray:
    """Resample an array living on the reference grid (Z×Y×X, or C×Z×Y×X) onto the visit's original grid.

    `transform` is the stored reference -> visit transform (or its .tfm path); `visit_geometry` needs `size`.
    Labels nearest-neighbour, everything else linear; 0 where the visit sees outside the reference grid."""
    if not isinstance(transform, sitk.Transform):
        transform = load_transform(transform)
    arr = np.asarray(array_in_reference_grid)
    if arr.ndim == 4:
        return np.stack([map_back_to_visit(a, reference_geometry, visit_geometry, transform, is_seg) for a in arr])
    inverse = invert_transform(transform, {**reference_geometry, "size": list(arr.shape[::-1])})
    src = image_from_array(arr if is_seg or arr.dtype == np.float64 else arr.astype(np.float32), reference_geometry)
    out = sitk.Resample(src, _grid_size(visit_geometry), inverse,
                        sitk.sitkNearestNeighbor if is_seg else sitk.sitkLinear,
                        [float(v) for v in visit_geometry["origin"]], [float(v) for v in visit_geometry["spacing"]],
                        [float(v) for v in visit_geometry["direction"]], 0.0, src.GetPixelID())
    return sitk.GetArrayFromImage(out)


# -- plans ------------------------------------------------------------------------------------------------------
def alignment_mode(plans: dict) -> str:
    """The alignment recorded in a plans dict ('none' for plans without the longitudinal key, e.g. nnU-Net's)."""
    return (plans.get("longitudinal") or {}).get("align", "none")


def apply_alignment_to_plans(plans: dict, mode: str) -> dict:
    """Record `mode` under plans['longitudinal'] and give every configuration's data_identifier a matching
    suffix (`nnUNetPlans_3d_fullres_alignedRigid`), so aligned and unaligned arrays never share a folder."""
    if mode not in ALIGN_MODES:
        raise LongnetError(f"unknown alignment mode {mode!r} (choose from {', '.join(ALIGN_MODES)})")
    plans["longitudinal"] = {**(plans.get("longitudinal") or {}), "align": mode, "reference": "first"}
    for conf in plans["configurations"].values():
        if "data_identifier" in conf:
            base = _SUFFIX_RE.sub("", conf["data_identifier"])
            conf["data_identifier"] = base if mode == "none" else f"{base}_aligned{mode.capitalize()}"
    return plans


# -- reusing the transforms of preprocessing ------------------------------------------------------------------
def _same_geometry(a: dict, b: dict) -> bool:
    """The same grid by the dataset checks' rule (`geometry_mismatch`); a record without a full geometry is not."""
    from longnet.dataset.io import geometry_mismatch

    try:
        return geometry_mismatch(a["size"], a, b["size"], b) is None
    except (KeyError, ValueError, TypeError):
        return False


def stored_transform_between(folder: str | Path, case: str, reference_case: str, case_geometry: dict,
                             reference_geometry: dict) -> sitk.Transform | None:
    """`reference_case` points -> `case` points, composed from the transforms aligned preprocessing stored for
    both visits (each registered to its subject's first visit): T_first→case ∘ (T_first→reference)⁻¹.

    None when either visit is not in `folder`, they were registered to different first visits, or the image
    given now (its geometry: spacing, origin, direction, size) is not the one that was preprocessed."""
    from longnet.io.case_names import case_file_name
    from longnet.utils.files import load_json

    folder = Path(folder)
    found = []
    for cid, geometry in ((case, case_geometry), (reference_case, reference_geometry)):
        props_file, tfm_file = folder / case_file_name(cid, "props"), folder / case_file_name(cid, "transform")
        if not (props_file.is_file() and tfm_file.is_file()):
            return None
        try:
            props = load_json(props_file)
        except (OSError, ValueError):
            return None
        original = props.get("original_geometry") or {}
        if not _same_geometry(original, geometry):
            return None
        found.append(((props.get("alignment") or {}).get("reference_case"), tfm_file, original))
    (first_a, tfm_case, _), (first_b, tfm_ref, ref_original) = found
    if first_a is None or first_a != first_b:
        return None
    if case == reference_case:
        return sitk.Euler3DTransform()
    try:  # a B-spline part is inverted numerically on the grid it was fitted on: the first visit's
        first_grid = load_json(folder / case_file_name(first_a, "props"))["original_geometry"]
    except (OSError, ValueError, KeyError):
        first_grid = ref_original
    to_case = load_transform(tfm_case)
    from_reference = invert_transform(load_transform(tfm_ref), first_grid)
    # a composite applies its last transform first: reference point -> first visit -> case
    return sitk.CompositeTransform([to_case, from_reference])
