"""Entry-point registry, `longnet_plugins`, checkpoint safety, requirements and the out-of-tree example plugin."""
from __future__ import annotations

import json
import types

import pytest
import torch

from longnet import registry
from longnet.cli.plugins import main as plugins_main
from longnet.errors import LongnetError


class _Dist:
    def __init__(self, name, version="1.0"):
        self.name, self.version = name, version


class _EP:
    """Stand-in for importlib.metadata.EntryPoint with a controllable load()."""

    def __init__(self, name, value, group, dist, obj=None, error=None):
        self.name, self.value, self.group, self.dist = name, value, group, dist
        self._obj, self._error = obj, error

    def load(self):
        if self._error is not None:
            raise self._error
        return self._obj


def _fake(monkeypatch, eps):
    monkeypatch.setattr(registry, "_entry_points", lambda group: [e for e in eps if e.group == group])


def _good_trainer():
    from longnet.training import Trainer

    class GoodTrainer(Trainer):
        """A trainer that imports fine."""

    return GoodTrainer


def test_broken_plugin_is_reported_and_does_not_hide_others(monkeypatch, capsys):
    good = _good_trainer()
    _fake(monkeypatch, [
        _EP("Good", "pkg_a.t:Good", registry.TRAINERS, _Dist("pkg-a", "1.2"), obj=good),
        _EP("Broken", "pkg_b.t:Broken", registry.TRAINERS, _Dist("pkg-b"), error=ImportError("No module named 'x'")),
    ])
    infos = {i.name: i for i in registry.list_plugins(registry.TRAINERS)}
    assert infos["Good"].error is None and infos["Good"].description == "A trainer that imports fine."
    assert infos["Good"].package == "pkg-a" and infos["Good"].version == "1.2"
    assert "No module named 'x'" in infos["Broken"].error
    assert registry.get_trainer("Good") is good
    with pytest.raises(LongnetError, match="'Broken'.*pkg-b.*failed to import: ImportError"):
        registry.get_trainer("Broken")
    assert plugins_main(["--json", "--group", registry.TRAINERS]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"Good", "Broken"}


def test_duplicate_names_from_two_packages_are_an_error(monkeypatch):
    good = _good_trainer()
    _fake(monkeypatch, [
        _EP("Same", "pkg_a.t:Same", registry.TRAINERS, _Dist("pkg-a"), obj=good),
        _EP("Same", "pkg_b.t:Same", registry.TRAINERS, _Dist("pkg-b"), obj=good),
    ])
    with pytest.raises(LongnetError) as exc:
        registry.get_trainer("Same")
    assert "pkg-a" in str(exc.value) and "pkg-b" in str(exc.value)
    infos = registry.list_plugins(registry.TRAINERS)
    assert len(infos) == 2 and all("more than one package" in i.error for i in infos)


def test_unknown_name_lists_available_and_non_trainer_is_refused(monkeypatch):
    _fake(monkeypatch, [_EP("NotATrainer", "m:f", registry.TRAINERS, _Dist("pkg"), obj=dict),
                        _EP("P1", "m:P1", registry.PLANNERS, _Dist("pkg"), obj=type("P1", (), {}))])
    with pytest.raises(LongnetError, match="unknown trainer 'Nope'; available: NotATrainer"):
        registry.get_trainer("Nope")
    with pytest.raises(LongnetError, match="not a subclass"):
        registry.get_trainer("NotATrainer")
    assert registry.get_planner("P1").__name__ == "P1"
    with pytest.raises(LongnetError, match="unknown planner"):
        registry.get_planner("P2")


def test_real_entry_points_list_the_builtin_trainer(capsys):
    assert plugins_main(["--json"]) == 0
    rows = {(r["group"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    row = rows[(registry.TRAINERS, "nnUNetTrainer")]
    assert row["package"] == "longnet" and row["error"] is None
    assert plugins_main([]) == 0
    assert "nnUNetTrainer" in capsys.readouterr().out


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    from longnet.io.checkpoints import load_checkpoint, load_pretrained_weights, save_checkpoint

    evil = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "payload": types.SimpleNamespace(run="rm -rf /")}, evil)
    with pytest.raises(LongnetError, match="contains pickled objects.*not a longnet checkpoint"):
        load_checkpoint(evil)
    with pytest.raises(LongnetError, match="contains pickled objects"):
        load_pretrained_weights(torch.nn.Linear(2, 2), evil)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(LongnetError, match="cannot read checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pth"
    torch.save({"state": torch.zeros(2)}, foreign)
    with pytest.raises(LongnetError, match="not a longnet checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(TypeError, match="checkpoints hold tensors"):
        save_checkpoint({"network_weights": {}, "x": types.SimpleNamespace()}, tmp_path / "bad.pth")
    assert not (tmp_path / "bad.pth").exists()


def test_nnunet_checkpoint_with_numpy_numbers_loads_but_object_arrays_do_not(tmp_path):
    """nnU-Net 2.x logs numpy floats in its checkpoints; those load, numpy object arrays stay refused."""
    import numpy as np

    from longnet.io.checkpoints import load_checkpoint

    nnunet_style = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {"w": torch.ones(2)}, "trainer_name": "nnUNetTrainer",
                "logging": {"mean_fg_dice": [np.float64(0.5), np.float32(0.25)], "epoch": np.int64(3)}},
               nnunet_style)
    ckpt = load_checkpoint(nnunet_style)
    assert float(ckpt["logging"]["mean_fg_dice"][0]) == 0.5 and int(ckpt["logging"]["epoch"]) == 3
    objects = tmp_path / "objects.pth"
    torch.save({"network_weights": {}, "x": np.array([types.SimpleNamespace()], dtype=object)}, objects)
    with pytest.raises(LongnetError, match="contains pickled objects"):
        load_checkpoint(objects)


def test_pretrained_weights_partial_loading(tmp_path):
    from longnet.io.checkpoints import load_pretrained_weights, save_checkpoint

    src = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    save_checkpoint({"network_weights": src.state_dict()}, tmp_path / "pre.pth")
    dst = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 5))  # different head
    messages = []
    loaded, skipped = load_pretrained_weights(dst, tmp_path / "pre.pth", log=messages.append)
    assert loaded == ["0.weight", "0.bias"] and len(skipped) == 2
    assert torch.equal(dst[0].weight, src[0].weight)
    assert "loaded 2/4" in messages[0] and any("shape" in m for m in messages)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    before = fresh[1].weight.detach().clone()
    loaded, skipped = load_pretrained_weights(fresh, tmp_path / "pre.pth", log=messages.append,
                                              exclude_prefixes=("1.",))
    assert loaded == ["0.weight", "0.bias"] and torch.equal(fresh[1].weight, before)  # same shape, still excluded
    assert all("freshly initialised" in s for s in skipped) and len(skipped) == 2


def test_requirements_name_what_is_missing():
    from longnet.data.dataset_index import DatasetIndex
    from longnet.training.requirements import Requirements, check_requirements

    idx = DatasetIndex(["a", "b"], {"a": {"labelled": True, "meta": {"score": 1}}, "b": {"labelled": False, "meta": {}}},
                       {"s1": ["a"], "s2": ["b"]})
    check_requirements(Requirements(labels="some"), idx, "T")
    with pytest.raises(LongnetError) as exc:
        check_requirements(Requirements(labels="all", min_visits_per_subject=2, required_columns=("score",)), idx, "T")
    text = str(exc.value)
    assert "every training case must be labelled" in text and ">= 2 visits" in text and "'score'" in text
    blank = DatasetIndex(["a", "b"], {"a": {"meta": {"score": 1.0}}, "b": {"meta": {"score": None}}}, {"s": ["a", "b"]})
    with pytest.raises(LongnetError, match="column 'score' .* missing or empty for 1 case"):  # an empty cell too
        check_requirements(Requirements(required_columns=("score",)), blank, "T")
    check_requirements(Requirements(some_columns=("score",)), blank, "T")  # one value is enough there
    with pytest.raises(LongnetError, match="column 'score' .* has no value for any training case"):
        check_requirements(Requirements(some_columns=("score",)), DatasetIndex(["b"], {"b": {"meta": {}}},
                                                                                {"s": ["b"]}), "T")


@pytest.fixture
def example_plugin(install_example):
    install_example("third_party_plugin", "longnet-example-plugin")


def test_example_plugin_is_discovered_and_trains(example_plugin, tmp_path, monkeypatch, capsys):
    from longnet.cli.train import main as train_main
    from tiny_seg_dataset import DATASET, fold_dir, make_tiny_dataset, set_env

    assert plugins_main(["--json"]) == 0
    out = capsys.readouterr().out
    rows = {r["name"]: r for r in json.loads(out)}
    assert "ExampleTinyTrainer" in rows, out
    assert rows["ExampleTinyTrainer"]["package"] == "longnet-example-plugin"
    assert rows["ExampleTinyTrainer"]["error"] is None
    set_env(monkeypatch, tmp_path)
    make_tiny_dataset(tmp_path)
    torch.set_num_threads(1)
    rc = train_main([DATASET, "3d_fullres", "0", "-tr", "ExampleTinyTrainer", "--example-lr", "3e-4", "--epochs", "1",
                     "--iters-per-epoch", "1", "--val-iters", "1", "--disable-final-validation", "-device", "cpu"])
    assert rc == 0
    ckpt = torch.load(fold_dir(tmp_path, "ExampleTinyTrainer") / "checkpoint_final.pth", weights_only=True)
    assert ckpt["trainer_name"] == "ExampleTinyTrainer"
    assert ckpt["optimizer_state"]["param_groups"][0]["lr"] == pytest.approx(3e-4)
