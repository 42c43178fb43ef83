"""nnU-Net's default planner: PlainConvUNet, 8 GB VRAM target, batch capped at 5% of the dataset."""
from longnet.planning.planner import PlannerBase


class ExperimentPlanner(PlannerBase):
    """nnU-Net default planner (PlainConvUNet, 8 GB)."""
