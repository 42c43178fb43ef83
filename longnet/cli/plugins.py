"""`longnet_plugins [--json] [--check] [--describe NAME]`: every registered trainer, planner and output task with
its package, version and description.

Listing reads the installed entry-point metadata and the plugins' source docstrings only, so it answers at once
without importing torch; `--check` imports every plugin (reporting the ones that fail) and `--describe NAME`
imports one to show its documentation and options.
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from longnet.cli.common import HelpFormatter, cli_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="longnet_plugins", allow_abbrev=False, formatter_class=HelpFormatter,
                                description="List trainer, planner and output-task plugins found through installed entry points "
                                            "(without importing them). --check imports each one and lists the "
                                            "import errors; --describe NAME shows one plugin's documentation and "
                                            "options.")
    p.add_argument("--json", action="store_true", help="machine-readable output (a JSON list)")
    p.add_argument("--group", default=None,
                   help="only this entry-point group (longnet.trainers, longnet.planners or longnet.tasks; default: all)")
    p.add_argument("--check", action="store_true",
                   help="import every plugin to find those that fail (slower: imports torch and each plugin)")
    p.add_argument("--describe", metavar="NAME", default=None,
                   help="import plugin NAME and print its documentation, package and command-line options "
                        "(default: list all plugins)")
    return p


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _check_options(infos: list) -> None:
    """--check also builds each trainer's command line and each task's evaluation options: an option that clashes
    with one of longnet's own is reported like an import failure."""
    from longnet.errors import LongnetError
    from longnet.registry import TASKS, TRAINERS, get_trainer
    from longnet.tasks import get_task

    for info in infos:
        if info.error is not None or info.group not in (TRAINERS, TASKS):
            continue
        try:
            if info.group == TRAINERS:
                from longnet.cli.train import build_parser

                build_parser(get_trainer(info.name))
            else:
                from longnet.cli.evaluate import _parse

                task = get_task(info.name)
                if task.add_arguments is not None:
                    _parse(["GT", "PRED", "--task", info.name])
        except LongnetError as e:
            info.error = e.message


def describe(name: str, group: str | None = None) -> str:
    """Documentation of one plugin: where it comes from, its docstring and, for a trainer, its options."""
    import inspect

    from longnet.errors import LongnetError
    from longnet.registry import KNOWN_GROUPS, TASKS, TRAINERS, get_trainer, list_plugins, load_plugin, plugin_names

    groups = [group] if group else list(KNOWN_GROUPS)
    owner = next((g for g in groups if name in plugin_names(g)), None)
    if owner is None:
        known = ", ".join(n for g in groups for n in plugin_names(g)) or "(none installed)"
        raise LongnetError(f"unknown plugin {name!r}; available: {known}")
    obj = get_trainer(name) if owner == TRAINERS else load_plugin(owner, name)
    info = next(i for i in list_plugins(owner, load=False) if i.name == name)
    lines = [f"{name} ({owner}; package {info.package} {info.version}; {info.target})", ""]
    if owner == TASKS:  # an OutputTask object: its own description, files and evaluation options
        lines += [obj.description, f"writes: {obj.outputs}"]
        if obj.add_arguments is not None:
            parser = argparse.ArgumentParser(prog=f"longnet_evaluate GT PRED --task {name}", add_help=False,
                                             allow_abbrev=False, formatter_class=HelpFormatter,
                                             usage=f"longnet_evaluate GT PRED --task {name} [options]")
            obj.add_arguments(parser.add_argument_group(f"evaluation options of {name}"))
            lines += ["", parser.format_help().rstrip()]
        return "\n".join(lines)
    lines.append(inspect.cleandoc(obj.__doc__ or "(no documentation)"))
    if owner == TRAINERS:
        lines += ["", f"prediction task: {getattr(obj, 'prediction_task', 'segmentation')}; default schedule "
                      f"{obj.num_epochs} epochs x {obj.num_iterations_per_epoch} iterations"]
        for title, hook, prog in (
                ("training options", "add_arguments", f"longnet_train DATASET CONFIG FOLD -tr {name}"),
                ("prediction options", "add_prediction_arguments", f"longnet_predict -i IN -o OUT -tr {name}")):
            parser = argparse.ArgumentParser(prog=prog, add_help=False, allow_abbrev=False,
                                             formatter_class=HelpFormatter, usage=f"{prog} [options]")
            getattr(obj, hook, lambda _: None)(parser.add_argument_group(f"{title} of {name}"))
            if any(a.option_strings for a in parser._actions):
                lines += ["", parser.format_help().rstrip()]
    return "\n".join(lines)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from longnet.registry import list_plugins

    if args.describe:
        print(describe(args.describe, args.group))
        return 0
    infos = list_plugins(args.group, load=args.check)
    if args.check:
        _check_options(infos)
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return 0
    rows = [["GROUP", "NAME", "PACKAGE", "VERSION", "DESCRIPTION"]]
    for i in infos:
        desc = f"IMPORT FAILED: {i.error}" if i.error and args.check else (i.error or i.description or "-")
        rows.append([i.group, i.name, i.package, i.version, desc])
    print(_table(rows) if infos else "no plugins registered")
    if infos and not args.check:
        print("\n(not imported: --check imports every plugin to find broken ones; --describe NAME shows one's "
              "options)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
