"""GPU check for STAMP: pretraining iteration time at a realistic volume (default 128³, ViT patch 16³ = 512
tokens, ViT-B encoder / 8-block decoder, 32×32 latent), bf16 autocast, torch.compile.

    python bench/stamp_gpu.py                      # on a CUDA machine: compiled + eager, bf16
    python bench/stamp_gpu.py --device cpu --size 32 --patch 8 --preset tiny --no-compile --steps 2   # smoke

One iteration = forward of a pair batch (past full, future 75% masked), STAMP loss, backward, grad clip 3.0,
AdamW step: what STAMPTrainer.training_step + backward_and_step do. Prints ms/iteration, pairs/s and peak
memory, as one JSON line per mode (also `run_check()` for a combined GPU benchmark script).
"""
from __future__ import annotations

import argparse
import json

import torch
from _gpu_common import (add_timing_arguments, compile_modes, device_name, enable_tf32, peak_mem_gib,
                         time_steps)


def run_check(device: str = "cuda", size: int = 128, patch: int = 16, channels: int = 1, batch: int = 8,
              preset: str = "base", compile: bool = True, amp: str = "bf16", steps: int = 20, warmup: int = 5,
              deterministic: bool = False) -> dict:
    """Time `steps` pretraining iterations after `warmup` (compilation happens in the warm-up)."""
    from longnet_stamp.config import PRESETS, STAMPConfig
    from longnet_stamp.losses import stamp_loss
    from longnet_stamp.model import STAMPNet
    from longnet_stamp.patching import patchify

    dev = torch.device(device)
    cfg = STAMPConfig(in_channels=channels, img_size=(size,) * 3, patch=(patch,) * 3, dt_min=90, dt_max=540,
                      deterministic=deterministic, **PRESETS[preset])
    net = STAMPNet(cfg).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.01)
    model = torch.compile(net) if compile else net
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    g = torch.Generator(device="cpu").manual_seed(0)
    past = torch.randn(batch, channels, size, size, size, generator=g).to(dev)
    future = torch.randn(batch, channels, size, size, size, generator=g).to(dev)
    dt = torch.rand(batch, generator=g).to(dev) * 450 + 90

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            out = model(past, future, dt, torch.rand(batch, cfg.num_patches, device=dev))
            loss = stamp_loss(out["pred"], patchify(future, cfg.patch), out["mask"], out.get("post_logits"),
                              out.get("prior_logits"))["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 3.0)
        opt.step()
        return float(loss.detach())

    per, t_warm, last = time_steps(step, dev, warmup, steps)
    return {"device": device_name(dev), "size": size,
            "patch": patch, "tokens": cfg.num_patches, "batch": batch, "preset": preset, "compile": compile,
            "amp": amp, "variant": "siamese_mae" if deterministic else "stamp",
            "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
            "ms_per_iteration": round(per * 1000, 1), "pairs_per_s": round(batch / per, 1),
            "warmup_s": round(t_warm, 1), "final_loss": round(last, 4),
            "peak_mem_GiB": peak_mem_gib(dev)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--preset", default="base")
    ap.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "off"])
    add_timing_arguments(ap)
    args = ap.parse_args(argv)
    enable_tf32(args.device)
    for compiled in compile_modes(args):
        print(json.dumps(run_check(args.device, args.size, args.patch, args.channels, args.batch, args.preset,
                                   compiled, args.amp, args.steps, args.warmup)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
