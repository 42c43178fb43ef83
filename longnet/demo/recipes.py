"""Demo recipes: how `longnet_demo` shows one trainer (train briefly, predict, evaluate, one table row).

A recipe is a function `DemoContext -> RecipeResult`. Built-in ones register with `@recipe("TrainerName")`;
plugin packages ship theirs under the entry-point group `longnet.demo_recipes` (name = a trainer name, or a
prefix covering several of the plugin's trainers). Recipes run the real commands in-process through
`call_command`, so the demo exercises exactly what a user types.
"""
from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from longnet.errors import LongnetError

RECIPE_GROUP = "longnet.demo_recipes"
NO_RECIPE = "no demo recipe"
PLANS = "nnUNetPlans"
CONFIG = "3d_fullres"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and schedule. `default` must finish on 2 CPU cores in < 10 min; `quick` is the CI setting."""

    n_subjects_train: int
    n_subjects_test: int
    shape: tuple[int, int, int]
    epochs: int
    iters_per_epoch: int
    val_iters: int
    tta: bool
    gpu_memory_target: float | None = None


SETTINGS = {
    "default": DemoSettings(12, 4, (32, 40, 32), epochs=6, iters_per_epoch=10, val_iters=2, tta=False),
    "quick": DemoSettings(4, 2, (24, 32, 24), epochs=2, iters_per_epoch=5, val_iters=1, tta=False),
}


@dataclass
class DemoContext:
    """What a recipe needs: where things are and how long to train."""

    out: Path
    dataset_id: int
    dataset_name: str
    raw_folder: Path
    device: str
    settings: DemoSettings
    pictures: Path
    results: dict = field(default_factory=dict)  # trainer -> RecipeResult, for recipes that build on others


@dataclass
class RecipeResult:
    """One row of the summary table (+ the files a person should look at)."""

    produced: str
    metric: str
    value: float | None
    baseline: float | None
    baseline_name: str = ""
    pictures: list[Path] = field(default_factory=list)
    outputs: Path | None = None


Recipe = Callable[[DemoContext], RecipeResult]
RECIPES: dict[str, Recipe] = {}


def recipe(trainer: str) -> Callable[[Recipe], Recipe]:
    """Register the demo recipe of a trainer (its entry-point name). Table order = registration order."""

    def deco(fn: Recipe) -> Recipe:
        RECIPES[trainer] = fn
        return fn

    return deco


class StepMissing(LongnetError):
    """A command module is not installed/written yet: the demo reports it instead of crashing."""


class StepFailed(LongnetError):
    """A command returned a non-zero exit code (its own message is already on stderr)."""


def call_command(module: str, func: str, argv: list[str]) -> None:
    """Run `longnet.cli.<module>.<func>(argv)` in-process; non-zero exit -> StepFailed."""
    try:
        mod = importlib.import_module(f"longnet.cli.{module}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("longnet"):
            raise StepMissing(f"longnet.cli.{module} is not available ({e})") from None
        raise
    fn = getattr(mod, func, None)
    if fn is None:
        raise StepMissing(f"longnet.cli.{module} has no {func}()")
    shown = " ".join(argv)
    print(f"$ longnet_{module} {shown}", flush=True)
    rc = fn(argv)
    if rc == 130:  # Ctrl-C or SIGTERM inside a step stops the whole demo, not just that recipe
        raise KeyboardInterrupt()
    if rc == 143:
        from longnet.cli.common import Terminated

        raise Terminated()
    if rc not in (None, 0):
        raise StepFailed(f"longnet.cli.{module}.{func}({shown}) exited with code {rc}")


ALIGNED_PLANS = "nnUNetPlansAligned"


def aligned_plans(ctx: DemoContext) -> str:
    """Plans name of the demo dataset preprocessed with rigid intra-subject alignment (done once, shared by the
    recipes whose losses compare visits voxel by voxel; the fingerprint is reused, other plans stay untouched)."""
    plans_file = Path(os.environ["LONGNET_PREPROCESSED"]) / ctx.dataset_name / f"{ALIGNED_PLANS}.json"
    if not plans_file.is_file():
        call_command("plan_and_preprocess", "main_plan_and_preprocess",
                     ["-d", str(ctx.dataset_id), "-c", CONFIG, "-np", "2", "-overwrite_plans_name", ALIGNED_PLANS,
                      "--align", "rigid"])
    return ALIGNED_PLANS


@contextmanager
def demo_environment(out: Path) -> Iterator[dict[str, Path]]:
    """Point LONGNET_RAW/PREPROCESSED/RESULTS under `out` for the run, restoring the caller's values after."""
    roots = {"LONGNET_RAW": out / "raw", "LONGNET_PREPROCESSED": out / "preprocessed",
             "LONGNET_RESULTS": out / "results"}
    saved = {k: os.environ.get(k) for k in roots}
    for k, p in roots.items():
        p.mkdir(parents=True, exist_ok=True)
        os.environ[k] = str(p)
    try:
        yield roots
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def registered_trainers() -> dict[str, str | None]:
    """Registered trainer names -> import error (None when the plugin loads). Falls back to the built-in one
    when nothing is registered (running from a source tree that was never pip-installed)."""
    from longnet.registry import list_plugins

    found: dict[str, str | None] = {}
    for info in list_plugins("longnet.trainers"):
        found[info.name] = found.get(info.name) or info.error
    return found or {"nnUNetTrainer": None}


def selectable_names() -> list[str]:
    """What `longnet_demo --trainers` accepts: recipe names and the registered trainers each covers, read from the
    installed metadata (no plugin is imported, so a typo is refused at once)."""
    from importlib.metadata import entry_points

    from longnet.registry import TRAINERS, plugin_names

    registered = dict.fromkeys(plugin_names(TRAINERS))
    recipes = list(dict.fromkeys([*RECIPES, *(ep.name for ep in entry_points(group=RECIPE_GROUP))]))
    names = set(recipes)
    for name in recipes:
        names.update(covered_trainers(name, RECIPES.get(name), registered))  # unloaded plugin recipe: by name
    return sorted(names)


def load_recipe_plugins() -> list[tuple[str, str]]:
    """Add recipes shipped by plugin packages (entry-point group `longnet.demo_recipes`, name = trainer name,
    value = a function DemoContext -> RecipeResult). Built-in recipes win. Returns (name, error) of failures."""
    from importlib.metadata import entry_points

    failures = []
    for ep in entry_points(group=RECIPE_GROUP):
        if ep.name in RECIPES:
            continue
        try:
            RECIPES[ep.name] = ep.load()
        except Exception as e:  # one broken plugin must not stop the demo
            failures.append((ep.name, f"{type(e).__name__}: {e}"))
    return failures


def covered_trainers(name: str, fn: Recipe | None, registered: dict[str, str | None]) -> list[str]:
    """Trainers a recipe shows: its `trainers` attribute, else the registered trainer of that name, else every
    registered trainer whose name starts with it (a plugin's recipe "LongRep" covers LongRepPretrainer and
    LongRepFinetuner)."""
    explicit = getattr(fn, "trainers", None)
    if explicit:
        return [t for t in explicit if t in registered]
    if name in registered:
        return [name]
    return sorted(t for t in registered if t.startswith(name))


def plan_recipes(registered: dict[str, str | None], recipe_errors: dict[str, str],
                 only: list[str] | None) -> tuple[list[tuple[str, list[str]]], list[tuple[str, str]]]:
    """(recipes to run with the trainers each covers, (trainer, reason) for every trainer that gets no run)."""
    to_run, covered = [], set()
    for name, fn in RECIPES.items():
        trainers = [t for t in covered_trainers(name, fn, registered) if not registered[t]]
        if not trainers:
            continue
        covered.update(trainers)
        if only and name not in only and not set(trainers) & set(only):
            continue
        to_run.append((name, trainers))
    skipped = []
    for t, err in registered.items():
        if err:
            skipped.append((t, f"not importable: {err}"))
        elif t in covered:
            if only and not any(t in ts for _, ts in to_run):
                skipped.append((t, "not selected (--trainers)"))
        else:
            owner = next((n for n in recipe_errors if t == n or t.startswith(n)), None)
            skipped.append((t, f"demo recipe failed to load: {recipe_errors[owner]}" if owner else NO_RECIPE))
    return to_run, skipped


