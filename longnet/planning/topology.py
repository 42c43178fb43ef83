"""U-Net topology from spacing and patch size: pooling per axis, conv kernel sizes, divisibility padding."""
from __future__ import annotations

import numpy as np


def pad_to_multiple(shape, divisor) -> np.ndarray:
    """Round each axis up to the next multiple of its divisor (an exact multiple stays). A median shape can be
    fractional (even number of cases): 12.5 with divisor 2 becomes 14, as in nnU-Net, not 12."""
    shape = np.asarray(shape, dtype=float)
    divisor = np.broadcast_to(np.asarray(divisor, dtype=int), shape.shape)
    return (np.ceil(shape / divisor) * divisor).astype(int)


def pool_and_conv_props(spacing, patch_size, min_feature_map_size: int = 4, max_numpool: int = 999999):
    """Pool an axis while its feature map stays ≥ 2·min size and its spacing is within 2× of the finest one.

    Returns (num_pool_per_axis, strides per stage, kernel sizes per stage, padded patch size, divisibility).
    """
    dim = len(spacing)
    cur_spacing = [float(s) for s in spacing]
    cur_size = [float(s) for s in patch_size]
    strides = [[1] * dim]
    kernels = []
    num_pool = [0] * dim
    kernel = [1] * dim
    while True:
        axes = [i for i in range(dim) if cur_size[i] >= 2 * min_feature_map_size]
        if not axes:
            break
        finest = min(cur_spacing[i] for i in axes)
        axes = [i for i in axes if cur_spacing[i] / finest < 2 and num_pool[i] < max_numpool]
        if len(axes) == 1 and cur_size[axes[0]] < 3 * min_feature_map_size:
            break
        if not axes:
            break
        for d in range(dim):
            if kernel[d] != 3 and cur_spacing[d] / min(cur_spacing) < 2:
                kernel[d] = 3
        stride = [1] * dim
        for a in axes:
            stride[a] = 2
            num_pool[a] += 1
            cur_spacing[a] *= 2
            cur_size[a] = np.ceil(cur_size[a] / 2)
        strides.append(stride)
        kernels.append(list(kernel))
    divisor = 2 ** np.array(num_pool)
    padded = pad_to_multiple(patch_size, divisor)
    kernels.append([3] * dim)
    return num_pool, strides, kernels, [int(p) for p in padded], divisor
