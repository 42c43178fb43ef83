"""Output tasks: what a trainer's `longnet_predict` writes and how `longnet_evaluate --task NAME` scores it.

A trainer names its task in `prediction_task`. longnet registers segmentation, longitudinal segmentation,
forecast, embedding and classification; a plugin package registers a new task through an entry point, e.g.::

    [project.entry-points."longnet.tasks"]
    visit_interval = "my_pkg.task:VISIT_INTERVAL"      # an OutputTask

`longnet_evaluate --task visit_interval GT PRED` then adds the task's options and calls its evaluator, so neither
command knows any plugin's file names. Built-in evaluators are named by dotted path and imported when used, so
listing tasks imports nothing heavy.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Callable

from longnet.errors import LongnetError

TASKS_GROUP = "longnet.tasks"


@dataclass(frozen=True)
class OutputTask:
    """One kind of prediction output.

    evaluate: args -> summary dict (written as summary.json; `args.gt`, `args.pred` and the task's own options);
    a callable or "module:function". add_arguments: options of `longnet_evaluate --task NAME`. write: the helper
    that writes the task's files, for trainers of the task to share (optional)."""

    name: str
    description: str
    outputs: str
    evaluate: Callable[[argparse.Namespace], dict] | str | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    write: Callable[..., object] | None = None

    def evaluator(self) -> Callable[[argparse.Namespace], dict]:
        if self.evaluate is None:
            raise LongnetError(f"task {self.name!r} has no evaluator: its outputs are scored by another task or "
                               "not at all")
        if callable(self.evaluate):
            return self.evaluate
        module, _, attr = self.evaluate.partition(":")
        return getattr(importlib.import_module(module), attr)


_EVALUATE = "longnet.cli.evaluate"
BUILTIN_TASKS: dict[str, OutputTask] = {t.name: t for t in (
    OutputTask("segmentation", "label maps in each input's geometry", "{case}{file_ending} (+ .npz/.json with "
               "--save_probabilities)", f"{_EVALUATE}:evaluate_segmentation"),
    OutputTask("longitudinal_segmentation", "label maps of each visit, predicted with earlier visits of the "
               "subject", "{case}{file_ending}, predictions.json", f"{_EVALUATE}:evaluate_segmentation"),
    OutputTask("forecast", "predicted future images", "{case}{file_ending}, forecasts.json",
               f"{_EVALUATE}:evaluate_forecast"),
    OutputTask("classification", "class probabilities per case or visit pair",
               "predictions.csv / change_predictions.csv", f"{_EVALUATE}:evaluate_classification"),
    OutputTask("embedding", "one vector per scan", "embeddings.npz, embeddings.csv, trajectories.png",
               f"{_EVALUATE}:evaluate_embedding"),
    OutputTask("none", "nothing: the trainer only pretrains", "-"),
)}


def plugin_task_names() -> list[str]:
    """Names registered by installed packages (metadata only, nothing imported)."""
    from longnet.registry import plugin_names

    return [n for n in plugin_names(TASKS_GROUP) if n not in BUILTIN_TASKS]


def task_names() -> list[str]:
    return sorted(BUILTIN_TASKS) + plugin_task_names()


def get_task(name: str) -> OutputTask:
    """The task registered under `name` (built in, or an installed entry point of `longnet.tasks`)."""
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    from longnet.registry import load_plugin

    if name not in plugin_task_names():
        raise LongnetError(f"unknown task {name!r}; available: {', '.join(task_names())}")
    task = load_plugin(TASKS_GROUP, name)
    if not isinstance(task, OutputTask) or task.name != name:
        raise LongnetError(f"task {name!r} must be registered as an OutputTask named {name!r}, got {task!r}")
    return task
