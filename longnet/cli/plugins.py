"""`longnet_plugins [--json]`: every registered trainer and planner with its package, version and description."""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from longnet.cli.common import HelpFormatter, cli_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="longnet_plugins", allow_abbrev=False, formatter_class=HelpFormatter,
                                description="List trainer and planner plugins found through installed entry points. "
                                            "A plugin that fails to import is listed with its error.")
    p.add_argument("--json", action="store_true", help="machine-readable output (a JSON list)")
    p.add_argument("--group", default=None,
                   help="only this entry-point group (e.g. longnet.trainers; default: trainers and planners)")
    return p


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    from longnet.registry import list_plugins

    args = build_parser().parse_args(argv)
    infos = list_plugins(args.group)
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return 0
    rows = [["GROUP", "NAME", "PACKAGE", "VERSION", "DESCRIPTION"]]
    for i in infos:
        desc = f"IMPORT FAILED: {i.error}" if i.error else i.description
        rows.append([i.group, i.name, i.package, i.version, desc])
    print(_table(rows) if infos else "no plugins registered")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
