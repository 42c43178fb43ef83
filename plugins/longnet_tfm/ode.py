"""ODE integration of dx/dt = v(t, x) from t = 0 to 1 (TFM inference).

Euler (plugin default, 10 steps), classical RK4, and an adaptive Dormand–Prince RK45 (the official code's
`dopri5`, atol = rtol = 1e-5): torchdiffeq's when installed, otherwise the small implementation below.
Every step detaches (inference only), so memory does not grow with the step count.
"""
from __future__ import annotations

from typing import Callable

import torch

VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METHODS = ("euler", "rk4", "dopri5")


def _grid(steps: int, like: torch.Tensor) -> torch.Tensor:
    if steps < 1:
        raise ValueError(f"need at least one ODE step, got {steps}")
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64, device=like.device)


@torch.no_grad()
def euler(v: VectorField, x0: torch.Tensor, steps: int = 10) -> torch.Tensor:
    ts = _grid(steps, x0)
    x = x0
    for k in range(steps):
        t, dt = ts[k], float(ts[k + 1] - ts[k])
        x = x + dt * v(t.to(x0.dtype), x)
    return x


@torch.no_grad()
def rk4(v: VectorField, x0: torch.Tensor, steps: int = 10) -> torch.Tensor:
    ts = _grid(steps, x0)
    x = x0
    for k in range(steps):
        t, dt = float(ts[k]), float(ts[k + 1] - ts[k])
        T = lambda s: torch.tensor(s, dtype=x0.dtype, device=x0.device)  # noqa: E731
        k1 = v(T(t), x)
        k2 = v(T(t + dt / 2), x + dt / 2 * k1)
        k3 = v(T(t + dt / 2), x + dt / 2 * k2)
        k4 = v(T(t + dt), x + dt * k3)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


# Dormand–Prince 5(4) tableau
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = ((),
      (1 / 5,),
      (3 / 40, 9 / 40),
      (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
      (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


@torch.no_grad()
def dopri5(v: VectorField, x0: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-5,
           max_steps: int = 1000) -> torch.Tensor:
    """Adaptive RK45 (FSAL, error-per-step control with the usual 0.9·err^(−1/5) step update)."""
    try:
        from torchdiffeq import odeint  # type: ignore

        ts = torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device)
        return odeint(v, x0, ts, method="dopri5", rtol=rtol, atol=atol)[-1]
    except ImportError:
        pass
    t, x = 0.0, x0
    T = lambda s: torch.tensor(s, dtype=x0.dtype, device=x0.device)  # noqa: E731
    k1 = v(T(0.0), x)
    h = 0.1
    for _ in range(max_steps):
        if t >= 1.0 - 1e-12:
            return x
        h = min(h, 1.0 - t)
        ks = [k1]
        for i in range(1, 7):
            xi = x + h * sum(a * k for a, k in zip(_A[i], ks) if a)
            ks.append(v(T(t + _C[i] * h), xi))
        x5 = x + h * sum(b * k for b, k in zip(_B5, ks) if b)
        x4 = x + h * sum(b * k for b, k in zip(_B4, ks) if b)
        scale = atol + rtol * torch.maximum(x.abs(), x5.abs())
        err = float(torch.sqrt(torch.mean(((x5 - x4) / scale) ** 2)))
        if err <= 1.0:
            t, x, k1 = t + h, x5, ks[6]  # FSAL: the 7th stage is f(t+h, x5)
        factor = 5.0 if err == 0 else min(5.0, max(0.2, 0.9 * err ** -0.2))
        h = h * factor
    raise RuntimeError(f"dopri5 did not reach t = 1 in {max_steps} steps")


def integrate(v: VectorField, x0: torch.Tensor, method: str = "euler", steps: int = 10) -> torch.Tensor:
    """x(1) of dx/dt = v(t, x), x(0) = x0; `steps` is ignored by the adaptive method."""
    if method == "euler":
        return euler(v, x0, steps)
    if method == "rk4":
        return rk4(v, x0, steps)
    if method == "dopri5":
        return dopri5(v, x0)
    raise ValueError(f"unknown ODE method {method!r} (choose from {', '.join(METHODS)})")
