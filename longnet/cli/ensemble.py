"""`longnet_ensemble` (nnU-Net's nnUNetv2_ensemble): average the probabilities of several prediction folders."""
from __future__ import annotations

import argparse
from typing import Sequence

from longnet.cli.common import HelpFormatter, cli_main
from longnet.utils.parallel import default_num_processes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_ensemble", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Average the {case}.npz probabilities of several prediction folders (written with "
                    "--save_probabilities / --npz; all folders must hold the same cases) and write the argmax "
                    "label maps in the first folder's geometry, with its dataset.json.")
    p.add_argument("-i", dest="inputs", nargs="+", required=True, help="prediction folders to ensemble")
    p.add_argument("-o", dest="output", required=True, help="output folder (created)")
    p.add_argument("-np", dest="num_processes", type=int, default=default_num_processes(),
                   help="worker processes")
    p.add_argument("--save_npz", action="store_true",
                   help="also write the averaged probabilities ({case}.npz) and properties ({case}.json, .pkl)")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.inference.ensemble import ensemble_folders

    cases = ensemble_folders(args.inputs, args.output, args.num_processes, args.save_npz)
    print(f"ensembled {len(cases)} case(s) of {len(args.inputs)} folder(s) into {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
