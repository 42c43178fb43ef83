"""Keep the largest connected component of a mask, and nnU-Net's per-label/region use of it."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

LabelsOrRegions = int | tuple[int, ...] | Sequence[int | tuple[int, ...]]


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component(s) of a boolean mask, full connectivity (26 in 3D, 8 in 2D); components
    tied for the largest size are all kept."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    labelled, _ = ndimage.label(mask, structure=structure)
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    keep = np.flatnonzero(sizes == sizes.max())
    return np.isin(labelled, keep)


def mask_of(seg: np.ndarray, labels_or_regions: LabelsOrRegions) -> np.ndarray:
    """Union of the labels/regions: an int is one label, a tuple or list the union of its members."""
    items = labels_or_regions if isinstance(labels_or_regions, (list, tuple)) else [labels_or_regions]
    values: set[int] = set()
    for item in items:
        values.update(int(v) for v in (item if isinstance(item, (list, tuple)) else [item]))
    return np.isin(seg, sorted(values))


def remove_all_but_largest_component(seg: np.ndarray, labels_or_regions: LabelsOrRegions,
                                     background_label: int = 0) -> np.ndarray:
    """Voxels of `labels_or_regions` outside the largest component of their joint mask become background.
    (nnU-Net: remove_all_but_largest_component_from_segmentation.)"""
    mask = mask_of(seg, labels_or_regions)
    out = np.array(seg, copy=True)
    out[mask & ~keep_largest_component(mask)] = background_label
    return out
