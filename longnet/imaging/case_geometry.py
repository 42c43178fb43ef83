"""Where a preprocessed case came from, and the way back: one object for every exporter (segmentation logits,
forecast images) instead of each one undoing resampling, cropping and transposition by hand."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

_DEFAULT_KWARGS = {"probabilities": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
                   "image": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}}


@dataclass(frozen=True)
class CaseGeometry:
    """Preprocessing of one case, as recorded in its properties and its configuration's plans:
    transpose (forward) -> crop to `bbox` -> resample from `cropped_shape` at `original_spacing` to `spacing`."""

    shape_before_cropping: tuple[int, ...]
    bbox: tuple[tuple[int, int], ...]
    cropped_shape: tuple[int, ...]
    original_spacing: tuple[float, ...]  # in the transposed axis order
    spacing: tuple[float, ...]  # of the preprocessed grid (a 2d configuration's z keeps the original spacing)
    transpose_backward: tuple[int, ...]
    resampling: dict[str, dict]  # kind ('probabilities' | 'image') -> the plan's resampling kwargs

    @classmethod
    def of(cls, props: dict, plans: Any, configuration: Any) -> "CaseGeometry":
        """From a case's properties, the plans (`transpose_forward/backward`) and the configuration plan
        (`spacing`, `get(...)` of its resampling kwargs)."""
        cropped = tuple(int(s) for s in props["shape_after_cropping_and_before_resampling"])
        original = tuple(float(props["spacing"][i]) for i in plans.transpose_forward)
        spacing = tuple(float(s) for s in configuration.spacing)
        if len(spacing) < len(cropped):  # 2d configuration
            spacing = (original[0], *spacing)
        resampling = {"probabilities": dict(configuration.get("resampling_fn_probabilities_kwargs")
                                            or _DEFAULT_KWARGS["probabilities"]),
                      "image": dict(configuration.get("resampling_fn_data_kwargs") or _DEFAULT_KWARGS["image"])}
        for kwargs in resampling.values():
            kwargs["is_seg"] = False
        return cls(tuple(int(s) for s in props["shape_before_cropping"]),
                   tuple((int(lo), int(hi)) for lo, hi in props["bbox_used_for_cropping"]), cropped, original,
                   spacing, tuple(int(b) for b in plans.transpose_backward), resampling)

    def to_cropped_grid(self, arr: np.ndarray, kind: str = "probabilities") -> np.ndarray:
        """C×(preprocessed grid) -> C×(cropped original grid), with the plan's resampling of that kind."""
        from longnet.imaging.resampling import resample_data_or_seg_to_shape

        if tuple(arr.shape[1:]) == self.cropped_shape:
            return arr
        return resample_data_or_seg_to_shape(arr, list(self.cropped_shape), list(self.spacing),
                                             list(self.original_spacing), **self.resampling[kind])

    def uncrop(self, arr: np.ndarray, fill: float = 0) -> np.ndarray:
        """A (C×)cropped array pasted into the uncropped volume, in the input's own axis order."""
        has_channels = arr.ndim == len(self.shape_before_cropping) + 1
        full = np.full(([arr.shape[0]] if has_channels else []) + list(self.shape_before_cropping), fill,
                       dtype=arr.dtype)
        slicer = tuple(slice(lo, hi) for lo, hi in self.bbox)
        full[((slice(None),) if has_channels else ()) + slicer] = arr
        back: Sequence[int] = self.transpose_backward
        return full.transpose(([0] + [b + 1 for b in back]) if has_channels else back)

    def invert(self, arr: np.ndarray, kind: str = "probabilities", fill: float = 0) -> np.ndarray:
        """C×(preprocessed grid) -> C×(the input image's grid and axis order)."""
        return self.uncrop(np.asarray(self.to_cropped_grid(arr, kind)), fill)
