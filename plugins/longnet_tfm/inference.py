"""Forecast = integrate the learned flow from the filled context and reduce the slots.

`forecast` works on a batch that fits the network in one call; `forecast_volume` evaluates the velocity
field by Gaussian-weighted sliding windows (longnet's nnU-Net-style tiling) at every solver step, so any
volume size works with the training patch size. A zero velocity field gives x̃ back exactly either way.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from longnet_tfm.flow import fold_slots, reduce_slots, unfold_slots
from longnet_tfm.ode import integrate


def _velocity(network: nn.Module, gaps: torch.Tensor | None, context: torch.Tensor):
    def v(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = network(x, t.reshape(1).expand(x.shape[0]).to(x.device, torch.float32), gaps, context)
        return out.to(x.dtype)
    return v


@torch.no_grad()
def integrate_slots(network: nn.Module | Sequence[nn.Module], context: torch.Tensor, gaps: torch.Tensor | None,
                    method: str = "euler", steps: int = 10) -> torch.Tensor:
    """x(1) for every slot: B×T×C×… (a list of networks = fold ensemble, velocities averaged)."""
    nets = list(network) if isinstance(network, (list, tuple)) else [network]
    x0 = fold_slots(context.float())
    fields = [_velocity(n, gaps, x0) for n in nets]
    v = fields[0] if len(fields) == 1 else (lambda t, x: sum(f(t, x) for f in fields) / len(fields))
    return unfold_slots(integrate(v, x0, method, steps), context.shape[1])


def forecast(network: nn.Module | Sequence[nn.Module], context: torch.Tensor, gaps: torch.Tensor | None = None,
             method: str = "euler", steps: int = 10, reduction: str = "mean") -> torch.Tensor:
    """Predicted target B×C×… from the filled context B×T×C×…."""
    return reduce_slots(integrate_slots(network, context, gaps, method, steps), reduction)


def sliding_network(network: nn.Module, patch_size: Sequence[int], step_size: float = 0.5) -> nn.Module:
    """Wrap a velocity network so each call tiles the (single-sample) input with Gaussian-weighted windows."""
    from longnet.api import predict_sliding_window

    class _Tiled(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = network

        def forward(self, x: torch.Tensor, t: torch.Tensor, gaps: torch.Tensor | None = None,
                    context: torch.Tensor | None = None) -> torch.Tensor:
            # state and context are tiled together (channels stacked) so each window sees its own context
            n = x.shape[1]
            both = x if context is None else torch.cat([x, context.to(x.dtype)], dim=1)
            outs = []
            for i in range(x.shape[0]):
                ti = t[i:i + 1]
                gi = None if gaps is None else gaps[i:i + 1]
                fn = lambda tiles: self.net(tiles[:, :n], ti.expand(tiles.shape[0]),  # noqa: E731
                                            None if gi is None else gi.expand(tiles.shape[0], -1),
                                            None if context is None else tiles[:, n:])
                outs.append(predict_sliding_window(fn, both[i], patch_size, n, step_size=step_size,
                                                   mirror_axes=None, device=x.device, accumulate_dtype=torch.float32,
                                                   use_amp=False))
            return torch.stack(outs)

    return _Tiled()
