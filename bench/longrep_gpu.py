"""GPU check for LongRep: pretraining iteration time on the nnU-Net default 3d_fullres network for a 128³ patch
(PlainConvUNet, 6 stages 32…320, batch 2 pairs = 4 volumes per forward), W=2048 heads on the 11 tapped layers,
M=128 positions, fp16 autocast + grad scaling (the trainer's CUDA default), torch.compile.

    python bench/longrep_gpu.py                               # on a CUDA machine: compiled and eager
    python bench/longrep_gpu.py --device cpu --size 32 --features 4 --width 64 --steps 2   # CPU smoke (compiled + eager)

One iteration = LongRepPretrainModel forward on a pair batch (U-Net on both visits, hooks gather M positions per
tapped layer, projector/predictor heads, L_sim + L_rec + L_S + L_C + L_O), backward, grad clip 12, AdamW step
with the U-Net and head parameter groups: what LongRepPretrainer.training_step + backward_and_step do. Prints one
JSON line per mode (`run_check()` for a combined GPU benchmark script).
"""
from __future__ import annotations

import argparse
import json

import torch
from _gpu_common import (add_timing_arguments, compile_modes, device_name, enable_tf32, peak_mem_gib,
                         time_steps)


def default_architecture(size: int = 128, base_features: int = 32, max_features: int = 320) -> dict:
    """nnU-Net's default 3d_fullres topology for an isotropic `size`³ patch (stride 2 until 4³ is reached)."""
    n_stages = 1
    edge = size
    while edge % 2 == 0 and edge // 2 >= 4 and n_stages < 6:
        edge //= 2
        n_stages += 1
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [min(base_features * 2 ** i, max_features) for i in range(n_stages)],
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * n_stages,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1), "n_conv_per_stage": [2] * n_stages,
            "n_conv_per_stage_decoder": [2] * (n_stages - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def run_check(device: str = "cuda", size: int = 128, features: int = 32, width: int = 2048, patches: int = 128,
              batch: int = 2, channels: int = 1, classes: int = 4, compile: bool = True, amp: str = "fp16",
              steps: int = 20, warmup: int = 5) -> dict:
    """Time `steps` pretraining iterations after `warmup` (compilation happens in the warm-up)."""
    from longnet.planning.network import build_network_from_architecture
    from longnet_longrep.model import LongRepPretrainModel

    dev = torch.device(device)
    unet = build_network_from_architecture(default_architecture(size, features), channels, classes,
                                           deep_supervision=False)
    net = LongRepPretrainModel(unet, channels, classes, proj_width=width, pred_width=width // 4,
                               num_patches=patches).to(dev)
    head_ids = {id(p) for p in net.longrep_heads.parameters()}
    opt = torch.optim.AdamW([{"params": [p for p in net.parameters() if id(p) not in head_ids], "weight_decay": 0.0},
                             {"params": list(net.longrep_heads.parameters()), "weight_decay": 1e-2}], lr=2e-4)
    model = torch.compile(net) if compile else net
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype is torch.float16 and dev.type == "cuda")
    g = torch.Generator(device="cpu").manual_seed(0)
    x = [torch.randn(batch, channels, size, size, size, generator=g).to(dev) for _ in range(4)]

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss = model(*x)["loss"]
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    per, t_warm, last = time_steps(step, dev, warmup, steps)
    return {"check": "LongRepPretrainer iteration",
            "device": device_name(dev), "patch": [size] * 3,
            "taps": {t.name: t.channels for t in net.taps},
            "batch_pairs": batch, "proj_width": width, "num_patches": patches, "compile": compile, "amp": amp,
            "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
            "ms_per_iteration": round(per * 1000, 1), "pairs_per_s": round(batch / per, 2),
            "warmup_s": round(t_warm, 1), "final_loss": round(last, 4),
            "peak_mem_GiB": peak_mem_gib(dev)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--features", type=int, default=32, help="first-stage width (nnU-Net 32)")
    ap.add_argument("--width", type=int, default=2048, help="projector width W")
    ap.add_argument("--patches", type=int, default=128, help="positions M per tapped layer")
    ap.add_argument("--batch", type=int, default=2, help="pairs per batch")
    ap.add_argument("--amp", default=None, choices=["bf16", "fp16", "off"], help="default fp16 on CUDA, off on CPU")
    add_timing_arguments(ap)
    args = ap.parse_args(argv)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    enable_tf32(args.device)
    amp = args.amp or ("fp16" if args.device.startswith("cuda") else "off")
    for compiled in compile_modes(args):
        print(json.dumps(run_check(args.device, args.size, args.features, args.width, args.patches, args.batch,
                                   compile=compiled, amp=amp, steps=args.steps, warmup=args.warmup)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
