"""Built-in planner plugins (entry-point group `longnet.planners`), named as nnU-Net's so commands carry over."""
