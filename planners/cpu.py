"""A CPU-sized preset of nnU-Net's default plan: the same spacing, patch and topology, narrower stages and a
batch of at most two, so `longnet_train` finishes an epoch in minutes on a laptop instead of hours."""
from longnet.planning.planner import PlannerBase


class nnUNetPlannerCPU(PlannerBase):
    """nnU-Net's default plan narrowed for CPUs (8 base features, at most 128; batch ≤ 2; plans nnUNetPlansCPU)."""

    default_plans_name = "nnUNetPlansCPU"
    cpu_base_features = 8
    cpu_max_features = 128
    cpu_max_batch_size = 2

    def data_identifier(self, configuration: str) -> str:
        # 2d and 3d_fullres arrays are those of the default plans (same spacing and normalisation): shared
        if configuration in ("2d", "3d_fullres"):
            return f"nnUNetPlans_{configuration}"
        return super().data_identifier(configuration)

    def plan(self) -> dict:
        """The default planner's plans (patch and topology planned for the default network), then narrowed."""
        plans = super().plan()
        for conf in plans["configurations"].values():
            arch = (conf.get("architecture") or {}).get("arch_kwargs")
            if arch and "features_per_stage" in arch:
                arch["features_per_stage"] = [min(self.cpu_base_features * 2 ** i, self.cpu_max_features)
                                              for i in range(len(arch["features_per_stage"]))]
            if "batch_size" in conf:
                conf["batch_size"] = min(int(conf["batch_size"]), self.cpu_max_batch_size)
        return plans
