"""`longnet_convert_msd`: Medical Segmentation Decathlon folder -> raw dataset under $LONGNET_RAW."""
from __future__ import annotations

import argparse
from typing import Sequence

from longnet.cli.common import HelpFormatter, cli_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_convert_msd", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Convert an MSD TaskXX_Name folder into $LONGNET_RAW/DatasetXXX_Name (nnU-Net v2 layout). "
                    "Refuses to run if a dataset with the target id already exists.")
    p.add_argument("-i", dest="input", required=True, help="path to the MSD folder, e.g. Task04_Hippocampus")
    p.add_argument("-overwrite_id", type=int, default=None,
                   help="dataset id to use instead of the task number (e.g. 4 -> Dataset004_...; default: the task "
                        "number)")
    p.add_argument("-np", dest="num_processes", type=int, default=2, help="parallel workers (default 2)")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.dataset.msd import convert_msd

    dest = convert_msd(args.input, overwrite_id=args.overwrite_id, num_processes=max(1, args.num_processes))
    print(f"converted {args.input} -> {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
