"""Checks on prediction inputs, so a model only ever sees images like the ones it was trained on.

Before anything is written, every case's files get a header check (readable, sane spacing/size/pixel type, not cut
short) and the dimension the model needs: a 2D image pushed through a 3D model would give a label map that means
nothing. Channel count and finiteness need the voxels; the predictor checks them case by case just before each
case is predicted, as preprocessing does for training data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from longnet.dataset.readers import ImageReaderWriter, SimpleITKIO
from longnet.errors import DatasetError, LongnetError


def model_image_dimension(plans: Any, configuration: str) -> int | None:
    """2 or 3: the dimension of the images the model was trained on, or None when the plans do not tell.

    A 3D configuration, or any 3D configuration in the plans (the 2d configuration of a 3D dataset runs slice by
    slice over 3D images), means 3D images; plans without one whose median image is a single slice 999 times
    coarser than its pixels (how 2D files are read) were planned from 2D images."""
    names = [configuration] + [c for c in plans.available_configurations if c != configuration]
    for name in names:
        try:
            if len(plans.configuration(name).patch_size) == 3:
                return 3
        except (LongnetError, KeyError, TypeError):  # a broken extra configuration says nothing about this model
            continue
    d = plans.plans if hasattr(plans, "plans") else plans
    shape, spacing = d.get("original_median_shape_after_transp"), d.get("original_median_spacing_after_transp")
    if not (isinstance(shape, list) and isinstance(spacing, list) and len(shape) == len(spacing) == 3):
        return None
    try:
        # a 2D file is read as one slice with spacing 999 × its largest pixel spacing; a one-slice volume is not
        from_2d_files = shape[0] == 1 and float(spacing[0]) >= 999 * max(float(s) for s in spacing[1:]) * (1 - 1e-6)
    except (TypeError, ValueError):
        return None
    return 2 if from_2d_files else None


def input_dimension(rw: ImageReaderWriter, path: str | Path) -> int:
    """The spatial dimension of one input file from its header where the format allows (SimpleITK), else from the
    reader; a file that cannot be read raises the reader's own DatasetError naming it."""
    path = Path(path)
    if isinstance(rw, SimpleITKIO):
        from longnet.dataset.io import checked_header

        reader = checked_header(path)
        if reader.GetNumberOfComponents() != 1:
            raise DatasetError(f"vector image with {reader.GetNumberOfComponents()} components per voxel; store "
                               "each channel as its own file", path)
        return reader.GetDimension()
    dim = rw.image_dimension(path)
    if dim is None:
        rw.read_images([path])  # raises the reader's message for this file
        raise DatasetError("unreadable image file", path)
    return dim


def check_prediction_inputs(rw: ImageReaderWriter, cases: Sequence[tuple[str, Sequence[str | Path]]],
                            expected_dim: int | None, configuration: str) -> None:
    """Refuse the first input file whose header is broken or whose dimension the model cannot take."""
    for _, files in cases:
        for f in files:
            dim = input_dimension(rw, f)
            if expected_dim is not None and dim != expected_dim:
                raise DatasetError(f"image is {dim}D but the model ({configuration}) was trained on "
                                   f"{expected_dim}D images", f)
