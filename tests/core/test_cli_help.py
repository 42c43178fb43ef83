"""`-h` of every console command: exit 0 with or without positionals, every option explained with its default, and
no heavy import (torch, scipy, ...) before the arguments are parsed, so help and usage errors come at once."""
from __future__ import annotations

import argparse
import configparser
import contextlib
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "monai", "scipy", "skimage", "matplotlib", "pandas", "sklearn")  # seconds each, not 0.1 s


def _console_scripts() -> dict[str, str]:
    """name -> module:function, read from setup.cfg (the source of truth, installed or not)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines if line.strip())


SCRIPTS = _console_scripts()


def _load(target: str) -> Callable:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _run_help(monkeypatch, fn: Callable, argv: list[str]) -> tuple[int, str, list[argparse.ArgumentParser]]:
    """(exit code, stdout, the parsers that printed help) of fn(argv) run in-process."""
    printed: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.print_help

    def record(self, file=None):
        printed.append(self)
        original(self, file)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", record)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = fn(argv)
    assert rc == 0, f"{argv}: exit {rc}\n{err.getvalue()}"
    return rc, out.getvalue(), printed


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """Options without help text, and value-taking options whose help does not state the default."""
    problems = []
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        if not action.help or action.help is argparse.SUPPRESS or not action.help.strip():
            problems.append(f"{name}: no help text")
            continue
        takes_value = action.option_strings and action.nargs != 0 and not action.required
        if takes_value and "default" not in formatter._expand_help(action).lower():
            problems.append(f"{name}: help does not state the default")
    return problems


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_alone_and_after_positionals(name, monkeypatch):
    fn = _load(SCRIPTS[name])
    _, out, printed = _run_help(monkeypatch, fn, ["-h"])
    assert len(printed) == 1 and out.startswith("usage:")
    parser = printed[0]
    assert parser.allow_abbrev is False
    assert _undocumented(parser) == []
    positionals = []
    for action in parser._actions:
        if not action.option_strings and action.nargs not in ("?", "*"):
            positionals.append("1")
    _, out2, _ = _run_help(monkeypatch, fn, positionals + ["-h"])
    assert out2.startswith("usage:")


@pytest.mark.parametrize("argv", [["-h"], ["1", "3d_fullres", "0", "-tr", "nnUNetTrainer", "-h"],
                                  ["1", "3d_fullres", "0", "--help"]])
def test_train_help_lists_the_trainer_options(argv, monkeypatch):
    from longnet.cli.train import main

    _, out, printed = _run_help(monkeypatch, main, argv)
    assert "options of nnUNetTrainer" in out and "--augmentation" in out and "--labelled-subjects" in out
    assert _undocumented(printed[0]) == []


def test_help_of_a_plugin_trainer_imports_it(monkeypatch):
    from longnet.cli.predict import main as predict_main
    from longnet.cli.train import main as train_main

    _, out, printed = _run_help(monkeypatch, train_main, ["-tr", "LongRepPretrainer", "-h"])
    assert "options of LongRepPretrainer" in out and "--proj-width" in out
    assert _undocumented(printed[0]) == []
    _, out, printed = _run_help(monkeypatch, predict_main, ["-tr", "TFMTrainer", "-h"])
    assert "options of TFMTrainer" in out and "--with-lci" in out
    assert _undocumented(printed[0]) == []


def test_help_of_an_unknown_trainer_names_the_valid_ones(capsys):
    from longnet.cli.train import main

    assert main(["-tr", "Nope", "-h"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("longnet: error: unknown trainer 'Nope'; available:") and "nnUNetTrainer" in err


def test_help_and_plugin_listing_import_nothing_heavy():
    """One fresh interpreter runs every command's -h and `longnet_plugins --json`, then lists heavy modules."""
    code = f"""
import contextlib, importlib, io, json, sys
scripts = {json.dumps(SCRIPTS)}
for name, target in scripts.items():
    module, func = target.split(":")
    with contextlib.redirect_stdout(io.StringIO()):
        assert getattr(importlib.import_module(module), func)(["-h"]) == 0, name
from longnet.cli.plugins import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    assert main(["--json"]) == 0
rows = json.loads(out.getvalue())
print(json.dumps({{"heavy": sorted(m for m in {list(HEAVY)!r} if m in sys.modules), "plugins": len(rows)}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [] and report["plugins"] > 0


def test_every_registered_trainer_documents_its_options():
    """What `-tr X -h` and `longnet_plugins --describe X` show: help text and default for every option."""
    from longnet.cli.common import HelpFormatter
    from longnet.registry import TRAINERS, get_trainer, plugin_names

    problems = []
    for name in plugin_names(TRAINERS):
        cls = get_trainer(name)
        for hook in ("add_arguments", "add_prediction_arguments"):
            parser = argparse.ArgumentParser(add_help=False, formatter_class=HelpFormatter)
            getattr(cls, hook, lambda _: None)(parser.add_argument_group(name))
            problems += [f"{name}.{hook}: {p}" for p in _undocumented(parser)]
    assert problems == []


def test_plugins_describe_imports_one_plugin(capsys):
    from longnet.cli.plugins import main

    assert main(["--describe", "nnUNetTrainer"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nnUNetTrainer (longnet.trainers; package longnet") and "--augmentation" in out
    assert main(["--describe", "Nope"]) == 1
    assert "unknown plugin 'Nope'; available:" in capsys.readouterr().err


def test_readme_examples_parse(install_example):
    """Every longnet_train/predict/evaluate/demo line of the README's bash blocks is accepted by its parser, with the
    trainer's own options and ranges (copying an example never ends in `unrecognized arguments`); the plugin
    example's lines once it is installed, as the README says."""
    import re
    import shlex

    from longnet.cli import evaluate, predict, train
    from longnet.demo import main as demo
    from longnet.registry import get_trainer

    install_example("visit_interval_plugin", "longnet-visit-interval")
    text = (ROOT / "README.md").read_text()
    checked = 0
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():  # continued lines are one command
            for command in line.split("  #")[0].split("&&"):
                argv = shlex.split(command.strip())
                if not argv or argv[0] not in ("longnet_train", "longnet_predict", "longnet_evaluate", "longnet_demo"):
                    continue
                args = argv[1:]
                if argv[0] == "longnet_train":
                    cls = get_trainer(train._trainer_name(args))
                    ns = train.build_parser(cls).parse_args(args)
                    cls.check_options({k: v for k, v in vars(ns).items() if k not in train._CORE})
                elif argv[0] == "longnet_predict":
                    predict._parse(args)
                elif argv[0] == "longnet_evaluate":
                    evaluate.build_parser().parse_args(args)
                else:
                    demo._parser().parse_args(args)
                checked += 1
    assert checked >= 20
