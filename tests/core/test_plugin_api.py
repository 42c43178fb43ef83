"""The plugin contract: plugins import only `longnet.api`, every public name resolves, the hooks documented in
docs/plugin_api.md are the Trainer's, and output tasks resolve (built in or from entry points)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import longnet.api as api
from longnet.errors import LongnetError

ROOT = Path(__file__).resolve().parents[2]


def _plugin_sources() -> list[Path]:
    files = [p for folder in ("plugins", "examples") for p in (ROOT / folder).rglob("*.py")]
    return [p for p in files if "build" not in p.relative_to(ROOT).parts]


def test_plugins_import_only_the_public_api():
    offenders = []
    for path in _plugin_sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = ([node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else
                       [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for m in modules:
                if (m == "longnet" or m.startswith("longnet.")) and m != "longnet.api":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {m}")
    assert len(_plugin_sources()) > 40
    assert not offenders, "plugins may import only longnet.api:\n" + "\n".join(offenders)


def test_every_public_name_resolves():
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    with pytest.raises(AttributeError, match="public API"):
        api.NotAName  # noqa: B018


def _documented_hooks() -> list[str]:
    text = (ROOT / "docs" / "plugin_api.md").read_text(encoding="utf-8")
    section = text.split("## Hooks in call order", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\d+\. `([a-z_]+)`", section, flags=re.M)


def test_plugin_api_doc_lists_the_trainer_hooks_in_call_order():
    from longnet.training.trainer import Trainer

    hooks = _documented_hooks()
    assert len(hooks) >= 20 and len(set(hooks)) == len(hooks)
    for name in hooks:
        assert callable(getattr(Trainer, name, None)) or isinstance(getattr(Trainer, name, None), property), name
    # every public method a plugin overrides (documented in the base as a hook) is in the list
    base_hooks = {n for n in vars(Trainer) if not n.startswith("_") and callable(getattr(Trainer, n))
                  and (vars(Trainer)[n].__doc__ or "").strip()} - {"setup", "initialize", "run_training",
                                                                     "run_validation_only", "load_network_weights",
                                                                     "check_requirements", "print", "log",
                                                                     "make_batch_iterator", "run_title"}
    from longnet.training.prediction_contract import PredictionContract

    base_hooks |= {n for n in vars(PredictionContract) if not n.startswith("_")
                   and callable(getattr(PredictionContract, n))}
    assert base_hooks <= set(hooks), f"undocumented hooks: {sorted(base_hooks - set(hooks))}"


def test_output_tasks():
    from longnet.registry import get_trainer
    from longnet.tasks import BUILTIN_TASKS, get_task, task_names

    for name in ("nnUNetTrainer", "TFMTrainer", "STAMPProbeTrainer", "ClinImCLTrainer", "LEARNERChangeTrainer",
                 "PriorConcatTrainer", "LongRepPretrainer"):
        assert get_task(get_trainer(name).prediction_task).name in task_names()
    assert get_task("segmentation").evaluator().__name__ == "evaluate_segmentation"
    with pytest.raises(LongnetError, match="no evaluator"):
        BUILTIN_TASKS["none"].evaluator()
    with pytest.raises(LongnetError, match="unknown task 'nope'"):
        get_task("nope")


def test_typed_options_generate_flags_hold_defaults_and_check_ranges():
    import argparse
    from dataclasses import dataclass

    from longnet.training.options import POSITIVE_INT, add_option_arguments, option, parse_options

    @dataclass(frozen=True)
    class Opts:
        steps: int = option(10, "solver steps", range=POSITIVE_INT)
        method: str = option("euler", "solver", choices=("euler", "rk4"))
        exact: bool = option(False, "exact pairing")
        seed: int = 0  # not an option field: no flag

    parser = argparse.ArgumentParser()
    add_option_arguments(parser, Opts)
    text = parser.format_help()
    assert "--steps STEPS" in text and "solver steps (default 10; an integer >= 1)" in text and "--exact" in text
    assert "--seed" not in text
    given = vars(parser.parse_args(["--method", "rk4"]))
    assert parse_options(Opts, given) == Opts(10, "rk4", False, 0)  # not given -> the one default
    assert parse_options(Opts, {"steps": 0.0 + 3}).steps == 3
    with pytest.raises(LongnetError, match="--steps must be an integer >= 1, got 0"):
        parse_options(Opts, {"steps": 0})
    with pytest.raises(LongnetError, match="--method must be one of euler, rk4"):
        parse_options(Opts, {"method": "dopri"})
