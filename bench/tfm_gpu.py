"""GPU check for TFM: training iteration time and forecast time per subject at a realistic size.

    python bench/tfm_gpu.py                     # on a CUDA machine: compiled + eager, bf16
    python bench/tfm_gpu.py --device cpu --size 16,32,32 --base 8 --mult 1,1 --no-attention --no-compile \
        --steps 2 --warmup 1 --ode-steps 2           # smoke

One training iteration = what TFMTrainer.training_step + backward_and_step do: x_t = t·y + (1−t)·x̃ + σε on
T slots folded into channels, U-Net velocity, MSE to y − x̃, backward, grad clip 1.0, AdamW step. One forecast
= Euler integration (default 10 steps) of the whole volume from the filled context + mean over slots (the
network on the full volume; predictions larger than the training patch tile it, see longnet_tfm.inference).
Defaults: T = 3 slots, 1 channel, 32×128×128 (ACDC-like, the paper's setting), base 32, mult 1,1,2,4, attention
at the deepest level and in the middle, batch 4. Prints one JSON line per mode (also `run_check()`).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from _gpu_common import (add_timing_arguments, compile_modes, device_name, enable_tf32, peak_mem_gib,
                         time_steps)


def run_check(device: str = "cuda", size: tuple[int, int, int] = (32, 128, 128), slots: int = 3, channels: int = 1,
              batch: int = 4, base: int = 32, mult: tuple[int, ...] = (1, 1, 2, 4), attention: bool = True,
              compile: bool = True, amp: str = "bf16", steps: int = 20, warmup: int = 5, ode_steps: int = 10,
              forecasts: int = 3) -> dict:
    """Time `steps` training iterations after `warmup` (compilation happens in the warm-up), then `forecasts`
    single-subject forecasts."""
    from longnet_tfm.flow import broadcast_target, fold_slots, interpolate
    from longnet_tfm.inference import forecast
    from longnet_tfm.unet import TFMNetConfig, TFMUNet

    dev = torch.device(device)
    cfg = TFMNetConfig(slots * channels, base_channels=base, channel_mult=tuple(mult),
                       attention_levels=(len(mult) - 1,) if attention else (), mid_attention=attention,
                       n_slots=slots)
    net = TFMUNet(cfg).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
    model = torch.compile(net) if compile else net
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    g = torch.Generator(device="cpu").manual_seed(0)
    ctx = torch.rand(batch, slots, channels, *size, generator=g).to(dev)
    y = torch.rand(batch, channels, *size, generator=g).to(dev)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        x0, x1 = fold_slots(ctx), fold_slots(broadcast_target(y, slots))
        t = torch.rand(batch, device=dev)
        xt, ut = interpolate(x0, x1, t, 0.05)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss = F.mse_loss(model(xt, t).float(), ut)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    per_iter, t_warm, last = time_steps(step, dev, warmup, steps)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model.eval()
    with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
        forecast(model, ctx[:1], None, "euler", ode_steps, "mean")  # warm-up (compiles the eval graph)
        sync()
        t0 = time.perf_counter()
        for i in range(forecasts):
            forecast(model, ctx[i % batch:i % batch + 1], None, "euler", ode_steps, "mean")
        sync()
    per_subject = (time.perf_counter() - t0) / max(1, forecasts)
    return {"device": device_name(dev), "size": list(size),
            "slots": slots, "channels": channels, "batch": batch, "base": base, "mult": list(mult),
            "attention": attention, "compile": compile, "amp": amp,
            "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
            "ms_per_iteration": round(per_iter * 1000, 1), "samples_per_s": round(batch / per_iter, 1),
            "forecast_s_per_subject": round(per_subject, 3), "ode_steps": ode_steps,
            "warmup_s": round(t_warm, 1), "final_loss": round(last, 4),
            "peak_mem_GiB": peak_mem_gib(dev)}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", default="32,128,128", help="z,y,x")
    ap.add_argument("--slots", type=int, default=3)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--mult", default="1,1,2,4")
    ap.add_argument("--no-attention", action="store_true")
    ap.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "off"])
    ap.add_argument("--ode-steps", type=int, default=10)
    add_timing_arguments(ap)
    args = ap.parse_args(argv)
    enable_tf32(args.device)
    for compiled in compile_modes(args):
        print(json.dumps(run_check(args.device, _ints(args.size), args.slots, args.channels, args.batch, args.base,
                                   _ints(args.mult), not args.no_attention, compiled, args.amp, args.steps,
                                   args.warmup, args.ode_steps)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
