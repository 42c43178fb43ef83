"""Residual-encoder U-Net planners (nnU-Net ResEnc M/L/XL presets, MICCAI 2024 'nnU-Net revisited')."""
from longnet.planning.planner import PlannerBase


class _ResEncPlanner(PlannerBase):
    network_class_name = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    blocks_per_stage_encoder = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
    blocks_per_stage_decoder = (1,) * 12
    encoder_blocks_key = "n_blocks_per_stage"
    reference_val_3d = 680_000_000
    reference_val_2d = 135_000_000
    compare_at_batch_two = False
    max_dataset_covered = 1.0

    def data_identifier(self, configuration: str) -> str:
        # 2d and 3d_fullres data are identical to the default planner's: share them
        if configuration in ("2d", "3d_fullres"):
            return f"nnUNetPlans_{configuration}"
        return super().data_identifier(configuration)


class nnUNetPlannerResEncM(_ResEncPlanner):
    """ResEnc U-Net, M preset (9-11 GB GPUs)."""
    default_plans_name = "nnUNetResEncUNetMPlans"
    default_gpu_memory_target = 8.0
    reference_gb = 8.0


class nnUNetPlannerResEncL(_ResEncPlanner):
    """ResEnc U-Net, L preset (24 GB GPUs; nnU-Net's recommended default)."""
    default_plans_name = "nnUNetResEncUNetLPlans"
    default_gpu_memory_target = 24.0
    reference_gb = 24.0
    reference_val_3d = 2_100_000_000
    reference_val_2d = 380_000_000


class nnUNetPlannerResEncXL(_ResEncPlanner):
    """ResEnc U-Net, XL preset (40 GB GPUs)."""
    default_plans_name = "nnUNetResEncUNetXLPlans"
    default_gpu_memory_target = 40.0
    reference_gb = 40.0
    reference_val_3d = 3_600_000_000
    reference_val_2d = 560_000_000
