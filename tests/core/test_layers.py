"""longnet's layers: a module imports only from its own layer or the layers below it, at module level and inside
functions alike (a function-level import upwards is still a cycle). docs/internals.md describes the layers."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# bottom to top; one entry = one layer (top-level modules or subpackages of `longnet`)
LAYERS = [
    {"errors", "utils", "paths", "registry"},
    {"io"},
    {"dataset"},
    {"imaging"},
    {"fingerprint"},
    {"planning"},
    {"preprocessing"},
    {"data"},
    {"inference"},
    {"evaluation"},
    {"postprocessing"},
    {"workflow", "model_sharing"},
    {"training"},
    {"cli", "tasks"},  # tasks name the built-in evaluators of longnet_evaluate
    {"demo"},
    {"api"},  # the plugins' facade over every layer (a lazy name table)
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "longnet" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                                                    if node.module == "longnet"]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


def test_the_check_finds_an_upward_import(tmp_path, monkeypatch):
    bad = tmp_path / "longnet" / "io"
    bad.mkdir(parents=True)
    (bad / "x.py").write_text("def f():\n    from longnet.training.trainer import Trainer\n")
    assert [m for _, m in _imports(bad / "x.py")] == ["longnet.training.trainer"]
    assert LEVEL[_part("longnet.training.trainer")] > LEVEL["io"]


def test_every_part_of_longnet_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in (ROOT / "longnet").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert parts == set(LEVEL), f"assign a layer to: {sorted(parts - set(LEVEL))}; gone: {sorted(set(LEVEL) - parts)}"


def test_imports_go_down_the_layers():
    upward = []
    for path in (ROOT / "longnet").rglob("*.py"):
        rel = path.relative_to(ROOT / "longnet")
        source = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if source == "__init__":
            continue
        for line, module in _imports(path):
            target = _part(module)
            if target is None or target == source or target not in LEVEL:
                continue
            if LEVEL[target] > LEVEL[source]:
                upward.append(f"longnet/{rel}:{line} ({source}) imports {module} ({target})")
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))
