"""Where does LongRep pretraining collapse the U-Net's features? Effective rank (participation ratio of the channel
covariance) of every encoder/decoder stage output, random initialisation vs pretrained checkpoints, on preprocessed
training images of a `bench/longrep_oneshot.py` run folder.

    python bench/longrep_feature_rank.py --out /tmp/longrep_oneshot [CKPT ...]   # default: OUT/pretrained/*.pth
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATASET = "Dataset990_LongDemo"
PLANS = "LongRepBenchPlans"
CONFIG = "3d_fullres"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/longrep_oneshot", help="a bench/longrep_oneshot.py work folder")
    p.add_argument("checkpoints", nargs="*", help="LongRepPretrainer checkpoints (default: OUT/pretrained/*.pth)")
    p.add_argument("--cases", type=int, default=6, help="training images (first visits of the first subjects)")
    args = p.parse_args(argv)
    import torch

    from longnet.planning.network import build_network_from_architecture
    from longnet.io.storage import load_case
    from longnet.io.checkpoints import load_pretrained_weights
    from longnet_longrep.diagnostics import stage_output_ranks

    torch.set_num_threads(1)
    pre = Path(args.out) / "preprocessed" / DATASET
    config = json.loads((pre / f"{PLANS}.json").read_text())["configurations"][CONFIG]
    data = pre / config["data_identifier"]
    labels = json.loads((pre / "dataset.json").read_text())["labels"]
    cases = sorted(c.name[:-len(".b2nd")] for c in data.glob("*_v0.b2nd"))[:args.cases]
    images = [torch.from_numpy(load_case(data, c)[0]) for c in cases]
    checkpoints = [Path(c) for c in args.checkpoints] or sorted((Path(args.out) / "pretrained").glob("*.pth"))

    def network():
        torch.manual_seed(0)
        return build_network_from_architecture(config["architecture"], images[0].shape[0], len(labels),
                                               deep_supervision=False)

    columns = {"random init": stage_output_ranks(network(), images)}
    for ckpt in checkpoints:
        net = network()
        load_pretrained_weights(net, ckpt, log=lambda _m: None)
        columns[ckpt.stem] = stage_output_ranks(net, images)
    first = next(iter(columns.values()))
    print(f"effective rank of each stage's output on {len(cases)} training images ({', '.join(cases)})")
    print(f"{'stage':20s} {'channels':>8s} " + " ".join(f"{c[:24]:>24s}" for c in columns))
    for stage, (_, channels) in first.items():
        print(f"{stage:20s} {channels:8d} " + " ".join(f"{col[stage][0]:24.2f}" for col in columns.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
