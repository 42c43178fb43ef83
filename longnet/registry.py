"""Plugin discovery through installed entry points only (never by a dotted path taken from user data).

A third party ships a trainer or planner as an ordinary pip package that declares, e.g.::

    [project.entry-points."longnet.trainers"]
    MyTrainer = "my_pkg.trainer:MyTrainer"

Every command resolves names through this module, so one broken plugin never hides the others and two
packages claiming the same name are reported instead of silently resolved by install order.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from longnet.errors import LongnetError

TRAINERS = "longnet.trainers"
PLANNERS = "longnet.planners"
TASKS = "longnet.tasks"
KNOWN_GROUPS = (TRAINERS, PLANNERS, TASKS)

_KIND = {TRAINERS: "trainer", PLANNERS: "planner", TASKS: "output task"}


@dataclass
class PluginInfo:
    """One registered plugin as `longnet_plugins` reports it (error is None when it imports cleanly)."""

    name: str
    group: str
    package: str
    version: str
    description: str
    error: str | None
    target: str

    def to_dict(self) -> dict:
        return asdict(self)


def _entry_points(group: str) -> list:
    """All entry points of a group. Separate function so tests can substitute fake entry points."""
    return list(importlib.metadata.entry_points(group=group))


def _package(ep) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "unknown"
    name = getattr(dist, "name", None) or dist.metadata.get("Name", "unknown")
    return str(name), str(getattr(dist, "version", "unknown"))


def _kind(group: str) -> str:
    return _KIND.get(group, f"plugin of group {group!r}")


def _by_name(group: str) -> dict[str, list]:
    """Entry points grouped by name; the same package listed twice (e.g. two sys.path entries) counts once."""
    out: dict[str, list] = {}
    for ep in _entry_points(group):
        same = [e for e in out.get(ep.name, []) if _package(e)[0] == _package(ep)[0] and e.value == ep.value]
        if not same:
            out.setdefault(ep.name, []).append(ep)
    return out


def _duplicate_message(group: str, name: str, eps: list) -> str:
    who = " and ".join(f"{_package(e)[0]} {_package(e)[1]} ({e.value})" for e in eps)
    return (f"{_kind(group)} name {name!r} is registered by more than one package: {who}; "
            f"uninstall one of them or ask its authors to rename the entry point")


def load_plugin(group: str, name: str) -> Any:
    """Import the object registered as `name` in `group`; unknown, duplicate or broken plugins raise LongnetError."""
    eps = _by_name(group)
    if name not in eps:
        import difflib

        close = difflib.get_close_matches(name, list(eps), n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        available = ", ".join(sorted(eps)) or "(none installed)"
        raise LongnetError(f"unknown {_kind(group)} {name!r}{hint}; available: {available}")
    candidates = eps[name]
    if len({_package(e)[0] for e in candidates}) > 1 or len(candidates) > 1:
        raise LongnetError(_duplicate_message(group, name, candidates))
    ep = candidates[0]
    try:
        return ep.load()
    except Exception as e:  # a plugin's import may fail in any way; report it, do not crash discovery
        pkg, ver = _package(ep)
        raise LongnetError(f"{_kind(group)} {name!r} (package {pkg} {ver}, {ep.value}) failed to import: "
                           f"{type(e).__name__}: {e}") from None


# nnU-Net variants longnet does not ship, with the reason (shown when one is asked for by name)
NOT_PROVIDED = {
    **{n: "its heavier DA5 augmentation is not implemented in longnet" for n in (
        "nnUNetTrainerDA5", "nnUNetTrainerDA5ord0", "nnUNetTrainerDA5Segord0", "nnUNetTrainerDA5_10epochs",
        "nnUNetTrainer_onlyMirror01_DA5")},
    **{n: "nearest-neighbour segmentation interpolation in augmentation is not implemented in longnet" for n in (
        "nnUNetTrainer_DASegOrd0", "nnUNetTrainer_DASegOrd0_NoMirroring", "nnUNetTrainer_onlyMirror01_DASegOrd0")},
    **{n: "the Adan optimiser needs adan-pytorch, which longnet does not depend on" for n in (
        "nnUNetTrainerAdan", "nnUNetTrainerAdan1en3", "nnUNetTrainerAdan3en4", "nnUNetTrainerAdan1en1",
        "nnUNetTrainerAdanCosAnneal")},
    **{n: "top-k cross-entropy losses are not implemented in longnet" for n in (
        "nnUNetTrainerTopk10Loss", "nnUNetTrainerTopk10LossLS01", "nnUNetTrainerDiceTopK10Loss")},
    "nnUNetTrainer_warmup": "its per-iteration warm-up schedule is not implemented in longnet",
    "nnUNetTrainerBenchmark_5epochs": "benchmark trainers are not provided (time a run with --epochs 5)",
    "nnUNetTrainerBenchmark_5epochs_noDataLoading": "benchmark trainers are not provided",
    "nnUNetTrainer_Primus_S": "Primus (transformer) networks are not provided by longnet",
    "nnUNetTrainer_Primus_B": "Primus (transformer) networks are not provided by longnet",
    "nnUNetTrainer_Primus_M": "Primus (transformer) networks are not provided by longnet",
    "nnUNetTrainer_Primus_L": "Primus (transformer) networks are not provided by longnet",
}


def not_provided_reason(name: str) -> str | None:
    """Why an nnU-Net variant name is not available in longnet (None for names nnU-Net does not ship)."""
    reason = NOT_PROVIDED.get(name)
    return f"{name} is an nnU-Net variant that longnet does not provide: {reason}" if reason else None


def _is_trainer_class(obj: Any) -> bool:
    """A subclass of longnet's Trainer, told by its class hierarchy (the registry sits below the training layer
    and imports none of it)."""
    return isinstance(obj, type) and any(c.__module__ == "longnet.training.trainer" and c.__qualname__ == "Trainer"
                                         for c in obj.__mro__)


def get_trainer(name: str) -> type:
    """The Trainer subclass registered under `name` in `longnet.trainers`."""
    try:
        obj = load_plugin(TRAINERS, name)
    except LongnetError as e:
        reason = not_provided_reason(name) if name not in _by_name(TRAINERS) else None
        if reason is None:
            raise
        raise LongnetError(f"{e.message.split('; available')[0]}: {reason}") from None
    if not _is_trainer_class(obj):
        raise LongnetError(f"trainer {name!r} ({obj!r}) is not a subclass of longnet.api.Trainer")
    return obj


def get_planner(name: str) -> Any:
    """The planner class registered under `name` in `longnet.planners`."""
    obj = load_plugin(PLANNERS, name)
    if not isinstance(obj, type):
        raise LongnetError(f"planner {name!r} ({obj!r}) is not a class")
    return obj


def _first_doc_line(obj: Any) -> str:
    """A class's first docstring line; an object that carries its own `description` (an output task) gives that."""
    description = getattr(obj, "description", None)
    if not isinstance(obj, type) and isinstance(description, str):
        return description
    return _first_line(getattr(obj, "__doc__", None))


def _first_line(doc: str | None) -> str:
    for line in (doc or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def _module_source(module: str) -> Path | None:
    """The .py file of a dotted module name, found without importing it or its parent packages (find_spec of a
    top-level name imports nothing; the rest is a walk through its package folders)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    folders = [Path(f) for f in (spec.submodule_search_locations or [])]
    for part in rest[:-1]:
        folders = [f / part for f in folders if (f / part).is_dir()]
    for f in folders:
        for candidate in (f / f"{rest[-1]}.py", f / rest[-1] / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


@functools.lru_cache(maxsize=None)
def _class_docs(path: Path) -> dict[str, str]:
    """First docstring line of every top-level class of a source file (parsed, never executed)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return {}
    docs = {node.name: _first_line(ast.get_docstring(node)) for node in tree.body if isinstance(node, ast.ClassDef)}
    for node in tree.body:  # NAME = OutputTask("name", "description", ...): a task object, described by its text
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if (func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")) != "OutputTask":
                continue
            given = {k.arg: k.value for k in node.value.keywords}
            text = given.get("description", node.value.args[1] if len(node.value.args) > 1 else None)
            if isinstance(text, ast.Constant) and isinstance(text.value, str):
                docs.update({t.id: text.value for t in node.targets if isinstance(t, ast.Name)})
    return docs


def _generated_description(name: str) -> str:
    """nnU-Net's epoch-count variants are generated classes (no source to read): describe them from the name."""
    import re

    m = re.fullmatch(r"nnUNetTrainer_(\d+)epochs?(_NoMirroring)?", name)
    if m is None:
        return ""
    return f"nnUNetTrainer{'NoMirroring' if m.group(2) else ''} for {m.group(1)} epoch{'s' if m.group(1) != '1' else ''}."


def static_description(ep) -> str:
    """The first docstring line of an entry point's class read from its source without importing the plugin
    (so listing plugins does not import torch); '' when the object is not a plain class of that module."""
    module, _, attr = str(ep.value).partition(":")
    path = _module_source(module.strip())
    found = _class_docs(path).get(attr.strip(), "") if path is not None else ""
    return found or _generated_description(attr.strip())


def list_plugins(group: str | None = None, load: bool = True) -> list[PluginInfo]:
    """Every registered plugin of `group` (all known groups when None). `load`: import each one in isolation,
    which reports import failures; without it only the installed metadata and the sources are read (fast)."""
    groups = [group] if group else list(KNOWN_GROUPS)
    infos: list[PluginInfo] = []
    for g in groups:
        for name, eps in sorted(_by_name(g).items()):
            dup = _duplicate_message(g, name, eps) if len(eps) > 1 else None
            for ep in eps:
                pkg, ver = _package(ep)
                desc, err = "", dup
                if not load:
                    infos.append(PluginInfo(name, g, pkg, ver, static_description(ep), err, ep.value))
                    continue
                try:
                    desc = _first_doc_line(ep.load())
                except Exception as e:  # reported, never raised: other plugins must stay visible
                    err = f"{type(e).__name__}: {e}" if err is None else f"{err}; {type(e).__name__}: {e}"
                infos.append(PluginInfo(name, g, pkg, ver, desc, err, ep.value))
    return infos


def plugin_names(group: str) -> list[str]:
    """Registered names of a group, from the installed metadata only (nothing is imported)."""
    return sorted(_by_name(group))
