"""Planner base: target spacing, transpose, patch/batch size under a VRAM proxy, and the configurations
(2d, 3d_fullres, 3d_lowres + 3d_cascade_fullres) by nnU-Net's rules. Concrete planners (planners/) set the
network family and its reference numbers."""
from __future__ import annotations


import numpy as np

from longnet.planning.network import build_network_from_architecture
from longnet.planning.topology import pool_and_conv_props
from longnet.imaging.normalization import scheme_for_channel
from longnet.imaging.resampling import ANISO_THRESHOLD, compute_new_shape


class PlannerBase:
    """Subclasses set the class attributes below; `plan()` returns a plans dict in nnU-Net's schema."""

    network_class_name = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    default_plans_name = "nnUNetPlans"
    default_gpu_memory_target = 8.0
    reference_gb = 8.0
    reference_val_3d = 560_000_000
    reference_val_2d = 85_000_000
    reference_bs_3d = 2
    reference_bs_2d = 12
    base_num_features = 32
    max_features_3d = 320
    max_features_2d = 512
    min_feature_map_size = 4
    min_batch_size = 2
    max_dataset_covered = 0.05
    blocks_per_stage_encoder = (2,) * 12
    blocks_per_stage_decoder = (2,) * 11
    encoder_blocks_key = "n_conv_per_stage"
    lowres_creation_threshold = 0.25
    #: nnU-Net's default planner checks the VRAM proxy at batch 2 against a reference that may be for another batch
    compare_at_batch_two = True
    #: written to the plans as `image_reader_writer`; the caller sets it from the raw dataset's files
    #: (longnet.dataset.reader_choice.reader_writer_for_dataset)
    image_reader_writer = "SimpleITKIO"

    def __init__(self, dataset_json: dict, fingerprint: dict, dataset_name: str, gpu_memory_target: float | None = None,
                 plans_name: str | None = None, preprocessor_name: str = "DefaultPreprocessor",
                 overwrite_target_spacing=None):
        self.dataset_json = dataset_json
        self.fingerprint = fingerprint
        self.dataset_name = dataset_name
        self.gpu_memory_target = float(gpu_memory_target if gpu_memory_target is not None else self.default_gpu_memory_target)
        self.plans_name = plans_name or self.default_plans_name
        self.preprocessor_name = preprocessor_name
        self.overwrite_target_spacing = overwrite_target_spacing
        self._estimate_cache: dict[str, float] = {}

    # -- identifiers ---------------------------------------------------------------------------------
    def data_identifier(self, configuration: str) -> str:
        return f"{self.plans_name}_{configuration}"

    # -- spacing -------------------------------------------------------------------------------------
    def fullres_target_spacing(self) -> np.ndarray:
        if self.overwrite_target_spacing is not None:
            return np.array(self.overwrite_target_spacing, dtype=float)
        spacings = np.vstack(self.fingerprint["spacings"]).astype(float)
        sizes = np.vstack(self.fingerprint["shapes_after_crop"]).astype(float)
        target = np.percentile(spacings, 50, 0)
        target_size = np.percentile(sizes, 50, 0)
        worst = int(np.argmax(target))
        others = [i for i in range(len(target)) if i != worst]
        other_spacings = [target[i] for i in others]
        other_sizes = [target_size[i] for i in others]
        aniso_spacing = target[worst] > ANISO_THRESHOLD * max(other_spacings)
        aniso_voxels = target_size[worst] * ANISO_THRESHOLD < min(other_sizes)
        if aniso_spacing and aniso_voxels:
            coarse = np.percentile(spacings[:, worst], 10)
            if coarse < max(other_spacings):
                coarse = max(max(other_spacings), coarse) + 1e-5
            target[worst] = coarse
        return target

    def transpose(self) -> tuple[list[int], list[int]]:
        target = self.fullres_target_spacing()
        worst = int(np.argmax(target))
        forward = [worst] + [i for i in range(3) if i != worst]
        backward = [forward.index(i) for i in range(3)]
        return forward, backward

    # -- architecture --------------------------------------------------------------------------------
    def conv_op_names(self, dim: int) -> tuple[str, str]:
        return (f"torch.nn.modules.conv.Conv{dim}d", f"torch.nn.modules.instancenorm.InstanceNorm{dim}d")

    def architecture(self, dim: int, strides, kernels) -> dict:
        n_stages = len(strides)
        max_feat = self.max_features_2d if dim == 2 else self.max_features_3d
        conv, norm = self.conv_op_names(dim)
        return {
            "network_class_name": self.network_class_name,
            "arch_kwargs": {
                "n_stages": n_stages,
                "features_per_stage": [min(max_feat, self.base_num_features * 2 ** i) for i in range(n_stages)],
                "conv_op": conv,
                "kernel_sizes": [list(k) for k in kernels],
                "strides": [list(s) for s in strides],
                self.encoder_blocks_key: list(self.blocks_per_stage_encoder[:n_stages]),
                "n_conv_per_stage_decoder": list(self.blocks_per_stage_decoder[: n_stages - 1]),
                "conv_bias": True,
                "norm_op": norm,
                "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        }

    def estimate_vram(self, patch_size, architecture: dict) -> float:
        """Sum of conv feature-map elements for one sample: nnU-Net's proxy for GPU memory."""
        key = f"{list(patch_size)}_{architecture['arch_kwargs']['strides']}"
        if key not in self._estimate_cache:
            import torch

            n_in = len(self.dataset_json["channel_names"])
            n_out = len(self.dataset_json["labels"])
            threads = torch.get_num_threads()
            try:
                net = build_network_from_architecture(architecture, n_in, n_out, deep_supervision=False)
                self._estimate_cache[key] = float(net.compute_conv_feature_map_size(list(patch_size)))
            finally:
                torch.set_num_threads(threads)
        return self._estimate_cache[key]

    def vram_too_high(self, estimate: float, reference: float, ref_bs: int) -> bool:
        if self.compare_at_batch_two:
            return estimate / ref_bs * 2 > reference
        return estimate > reference

    # -- one configuration ---------------------------------------------------------------------------
    def plan_configuration(self, spacing, median_shape, data_identifier: str, approx_voxels_dataset: float) -> dict:
        spacing = [float(s) for s in spacing]
        dim = len(spacing)
        inv = 1 / np.array(spacing)
        target_volume = 256 ** 3 if dim == 3 else 2048 ** 2
        initial = [round(i) for i in inv * (target_volume / np.prod(inv)) ** (1 / dim)]
        initial = np.array([min(i, j) for i, j in zip(initial, median_shape[:dim])])
        _, strides, kernels, patch, divisor = pool_and_conv_props(spacing, initial, self.min_feature_map_size)
        arch = self.architecture(dim, strides, kernels)
        estimate = self.estimate_vram(patch, arch)
        reference = (self.reference_val_2d if dim == 2 else self.reference_val_3d) * self.gpu_memory_target / self.reference_gb
        ref_bs = self.reference_bs_2d if dim == 2 else self.reference_bs_3d
        while self.vram_too_high(estimate, reference, ref_bs):
            axis = int(np.argsort([p / m for p, m in zip(patch, median_shape[:dim])])[-1])
            trial = list(patch)
            trial[axis] -= divisor[axis]
            divisor = pool_and_conv_props(spacing, trial, self.min_feature_map_size)[4]
            patch = list(patch)
            patch[axis] -= divisor[axis]
            _, strides, kernels, patch, divisor = pool_and_conv_props(spacing, patch, self.min_feature_map_size)
            arch = self.architecture(dim, strides, kernels)
            estimate = self.estimate_vram(patch, arch)
        batch_size = round(reference / estimate * ref_bs)
        bs_cap = round(approx_voxels_dataset * self.max_dataset_covered / np.prod(patch, dtype=np.float64))
        batch_size = int(max(min(batch_size, bs_cap), self.min_batch_size))
        schemes, use_mask = self.normalization()
        interp = {"resampling_fn_data": "resample_data_or_seg_to_shape",
                  "resampling_fn_seg": "resample_data_or_seg_to_shape",
                  "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                  "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                  "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                  "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                         "force_separate_z": None}}
        return {"data_identifier": data_identifier, "preprocessor_name": self.preprocessor_name,
                "batch_size": batch_size, "patch_size": [int(p) for p in patch],
                "median_image_size_in_voxels": [float(m) for m in median_shape[:dim]],
                "spacing": spacing, "normalization_schemes": schemes, "use_mask_for_norm": use_mask,
                **interp, "architecture": arch}

    def normalization(self) -> tuple[list[str], list[bool]]:
        names = [self.dataset_json["channel_names"][k] for k in sorted(self.dataset_json["channel_names"], key=int)]
        schemes = [scheme_for_channel(n) for n in names]
        if self.fingerprint["median_relative_size_after_cropping"] < 3 / 4:
            use_mask = [s.leaves_outside_mask_at_zero for s in schemes]
        else:
            use_mask = [False] * len(schemes)
        return [s.__name__ for s in schemes], use_mask

    # -- all configurations --------------------------------------------------------------------------
    def plan(self) -> dict:
        fwd, bwd = self.transpose()
        fullres_spacing = self.fullres_target_spacing()
        spacing_t = fullres_spacing[fwd]
        new_shapes = [compute_new_shape(s, sp, fullres_spacing) for s, sp in
                      zip(self.fingerprint["shapes_after_crop"], self.fingerprint["spacings"])]
        median_shape_t = np.median(new_shapes, 0)[fwd]
        num_training = self.dataset_json.get("numTraining", len(self.fingerprint["spacings"]))
        approx_voxels = float(np.prod(median_shape_t, dtype=np.float64) * num_training)
        configs: dict[str, dict] = {}
        fullres = lowres = None
        if median_shape_t[0] != 1:
            fullres = self.plan_configuration(spacing_t, median_shape_t, self.data_identifier("3d_fullres"), approx_voxels)
            lowres = self._plan_lowres(fullres, median_shape_t, num_training)
            fullres["batch_dice"] = lowres is not None
            if lowres is not None:
                lowres["batch_dice"] = False
        plan_2d = self.plan_configuration(spacing_t[1:], median_shape_t[1:], self.data_identifier("2d"), approx_voxels)
        plan_2d["batch_dice"] = True
        configs["2d"] = plan_2d
        if lowres is not None:
            configs["3d_lowres"] = lowres
            lowres["next_stage"] = "3d_cascade_fullres"
        if fullres is not None:
            configs["3d_fullres"] = fullres
        if lowres is not None:
            configs["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
        median_spacing = np.median(np.vstack(self.fingerprint["spacings"]), 0)[fwd]
        median_shape = np.median(np.vstack(self.fingerprint["shapes_after_crop"]), 0)[fwd]
        return {
            "dataset_name": self.dataset_name,
            "plans_name": self.plans_name,
            "original_median_spacing_after_transp": [float(s) for s in median_spacing],
            "original_median_shape_after_transp": [int(round(s)) for s in median_shape],
            "image_reader_writer": self.image_reader_writer,
            "transpose_forward": [int(i) for i in fwd],
            "transpose_backward": [int(i) for i in bwd],
            "configurations": configs,
            "experiment_planner_used": type(self).__name__,
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": self.fingerprint["foreground_intensity_properties_per_channel"],
        }

    def _plan_lowres(self, fullres: dict, median_shape_t, num_training: int) -> dict | None:
        """Coarsen the spacing by 3% steps until a patch covers ≥ 25% of the median image."""
        median_voxels = np.prod(median_shape_t, dtype=np.float64)
        patch_voxels = np.prod(fullres["patch_size"], dtype=np.float64)
        lowres = None
        spacing = np.array(fullres["spacing"], dtype=float)
        full_spacing = np.array(fullres["spacing"], dtype=float)
        while patch_voxels / median_voxels < self.lowres_creation_threshold:
            coarsest = max(spacing)
            fine = coarsest / spacing > 2
            if np.any(fine):
                spacing[fine] *= 1.03
            else:
                spacing *= 1.03
            median_voxels = np.prod(full_spacing / spacing * median_shape_t, dtype=np.float64)
            shape = [round(i) for i in full_spacing / spacing * median_shape_t]
            lowres = self.plan_configuration(spacing, shape, self.data_identifier("3d_lowres"),
                                             float(median_voxels * num_training))
            patch_voxels = np.prod(lowres["patch_size"], dtype=np.int64)
        if lowres is not None and np.prod(median_shape_t, dtype=np.float64) / median_voxels < 2:
            lowres = None  # not coarse enough to be worth a separate stage
        return lowres
