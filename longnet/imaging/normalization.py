"""Intensity normalisation schemes, chosen per channel from its name in dataset.json (nnU-Net's rules)."""
from __future__ import annotations

import numpy as np


class Normalization:
    leaves_outside_mask_at_zero = False

    def __init__(self, use_mask_for_norm: bool = False, intensity_properties: dict | None = None):
        self.use_mask_for_norm = use_mask_for_norm
        self.props = intensity_properties or {}

    def run(self, image: np.ndarray, seg: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError


class ZScoreNormalization(Normalization):
    leaves_outside_mask_at_zero = True

    def run(self, image, seg=None):
        image = image.astype(np.float32, copy=False)
        if self.use_mask_for_norm and seg is not None:
            mask = seg >= 0
            values = image[mask]
            mean, std = values.mean(), values.std()
            image[mask] = (image[mask] - mean) / max(std, 1e-8)
        else:
            mean, std = image.mean(), image.std()
            image -= mean
            image /= max(std, 1e-8)
        return image


class CTNormalization(Normalization):
    def run(self, image, seg=None):
        p = self.props
        image = image.astype(np.float32, copy=False)
        np.clip(image, p["percentile_00_5"], p["percentile_99_5"], out=image)
        image -= p["mean"]
        image /= max(p["std"], 1e-8)
        return image


class NoNormalization(Normalization):
    def run(self, image, seg=None):
        return image.astype(np.float32, copy=False)


class RescaleTo01Normalization(Normalization):
    def run(self, image, seg=None):
        image = image.astype(np.float32, copy=False)
        image = image - image.min()
        return image / np.clip(image.max(), a_min=1e-8, a_max=None)


class RGBTo01Normalization(Normalization):
    def run(self, image, seg=None):
        return image.astype(np.float32, copy=False) / 255.0


SCHEMES = {c.__name__: c for c in (ZScoreNormalization, CTNormalization, NoNormalization,
                                   RescaleTo01Normalization, RGBTo01Normalization)}
_BY_CHANNEL_NAME = {"ct": CTNormalization, "nonorm": NoNormalization, "zscore": ZScoreNormalization,
                    "rescale_to_0_1": RescaleTo01Normalization, "rgb_to_0_1": RGBTo01Normalization}


def scheme_for_channel(channel_name: str) -> type[Normalization]:
    return _BY_CHANNEL_NAME.get(str(channel_name).lower(), ZScoreNormalization)


def get_scheme(name: str) -> type[Normalization]:
    from longnet.errors import LongnetError

    if name not in SCHEMES:
        raise LongnetError(f"unknown normalization scheme {name!r} (known: {', '.join(SCHEMES)})")
    return SCHEMES[name]
