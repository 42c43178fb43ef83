"""Model zips: export picks exactly nnU-Net's files, install round-trips them and refuses unsafe zips."""
from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest
import torch

from longnet.cli.model_sharing import main_export, main_install

DATASET = "Dataset042_Fake"
TPC = "nnUNetTrainer__nnUNetPlans__{}"


def _write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _fake_model(results: Path, conf: str, folds=("0", "1")) -> Path:
    model = results / DATASET / TPC.format(conf)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        _write(model / name, json.dumps({"file": name, "conf": conf}))
    for fold in folds:
        fd = model / f"fold_{fold}"
        fd.mkdir(parents=True)
        torch.save({"network_weights": {"w": torch.arange(4.0)}, "fold": int(fold)}, fd / "checkpoint_final.pth")
        torch.save({"network_weights": {"w": torch.zeros(2)}}, fd / "checkpoint_best.pth")
        _write(fd / "progress.png", "png")
        _write(fd / "training_log_2024_1_1_00_00_00.txt", "log")
        _write(fd / "validation" / "summary.json", "{}")
        _write(fd / "validation" / "case_1.nii.gz", "seg")
        _write(fd / "validation" / "case_1.npz", "probs")
        _write(fd / "validation" / "case_1.pkl", "props")
    _write(model / "fold_0" / "debug.json", "{}")
    cv = model / "crossval_results_folds_0_1"
    _write(cv / "summary.json", "{}")
    _write(cv / "postprocessing.json", "{}")
    _write(cv / "case_1.nii.gz", "seg")
    return model


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    res = tmp_path / "results"
    for conf in ("3d_fullres", "2d"):
        _fake_model(res, conf)
    ens = res / DATASET / "ensembles"
    _write(ens / f"ensemble___{TPC.format('3d_fullres')}___{TPC.format('2d')}___0_1" / "summary.json", "{}")
    _write(ens / f"ensemble___{TPC.format('3d_fullres')}___{TPC.format('2d')}___0_1" / "case_1.nii.gz", "s")
    _write(ens / f"ensemble___{TPC.format('3d_fullres')}___OtherTrainer__nnUNetPlans__2d___0_1" / "summary.json")
    _write(res / DATASET / "inference_information.json", "{}")
    _write(res / DATASET / "inference_instructions.txt", "never exported")
    monkeypatch.setenv("LONGNET_RESULTS", str(res))
    return res


def _names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


def _expected_members(confs=("3d_fullres", "2d")) -> list[str]:
    names = []
    for conf in confs:
        m = f"{DATASET}/{TPC.format(conf)}"
        names += [f"{m}/fold_0/debug.json", f"{m}/fold_0/checkpoint_final.pth", f"{m}/fold_0/progress.png",
                  f"{m}/fold_0/validation/summary.json",
                  f"{m}/fold_1/checkpoint_final.pth", f"{m}/fold_1/progress.png", f"{m}/fold_1/validation/summary.json",
                  f"{m}/crossval_results_folds_0_1/summary.json", f"{m}/crossval_results_folds_0_1/postprocessing.json",
                  f"{m}/plans.json", f"{m}/dataset_fingerprint.json", f"{m}/dataset.json"]
    if set(confs) == {"3d_fullres", "2d"}:
        ens = f"ensemble___{TPC.format('3d_fullres')}___{TPC.format('2d')}___0_1"
        names.append(f"{DATASET}/ensembles/{ens}/summary.json")
    return names + [f"{DATASET}/inference_information.json"]


def test_export_member_list_and_install_round_trip(results, tmp_path, monkeypatch):
    zip_path = tmp_path / "model.zip"
    assert main_export(["-d", "42", "-o", str(zip_path), "-c", "3d_fullres", "2d", "-f", "0", "1"]) == 0
    assert _names(zip_path) == _expected_members()
    with zipfile.ZipFile(zip_path) as zf:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())

    other = tmp_path / "other_results"
    monkeypatch.setenv("LONGNET_RESULTS", str(other))
    assert main_install([str(zip_path)]) == 0
    installed = sorted(p.relative_to(other).as_posix() for p in other.rglob("*") if p.is_file())
    assert installed == sorted(_expected_members())
    for name in installed:
        assert (other / name).read_bytes() == (results / name).read_bytes()
    chk = torch.load(other / DATASET / TPC.format("2d") / "fold_1" / "checkpoint_final.pth", weights_only=True)
    assert chk["fold"] == 1 and torch.equal(chk["network_weights"]["w"], torch.arange(4.0))


def test_export_one_configuration_skips_ensembles_with_other_members(results, tmp_path):
    zip_path = tmp_path / "m.zip"
    assert main_export(["-d", DATASET, "-o", str(zip_path), "-c", "3d_fullres", "-f", "0", "1"]) == 0
    assert _names(zip_path) == _expected_members(("3d_fullres",))


def test_export_cv_preds_and_extra_checkpoints(results, tmp_path):
    zip_path = tmp_path / "m.zip"
    assert main_export(["-d", "42", "-o", str(zip_path), "-c", "2d", "-f", "1", "-chk", "checkpoint_final.pth",
                        "checkpoint_best.pth", "--exp_cv_preds"]) == 0
    m = f"{DATASET}/{TPC.format('2d')}"
    assert _names(zip_path) == [
        f"{m}/fold_1/checkpoint_final.pth", f"{m}/fold_1/checkpoint_best.pth", f"{m}/fold_1/progress.png",
        f"{m}/fold_1/validation/case_1.nii.gz", f"{m}/fold_1/validation/summary.json",
        f"{m}/plans.json", f"{m}/dataset_fingerprint.json", f"{m}/dataset.json",
        f"{DATASET}/inference_information.json"]  # no crossval_results_folds_1 folder exists


@pytest.mark.parametrize("argv, problem", [
    (["-c", "3d_lowres", "-f", "0"], "no trained model for configuration '3d_lowres'"),
    (["-c", "2d"], "fold 2 was requested but its folder is missing"),
    (["-c", "2d", "-f", "0", "-chk", "checkpoint_latest.pth"], "file not found"),
    (["-c", "2d", "-f", "x"], "invalid fold 'x'"),
    (["-c", "2d", "-f", "0", "--not_strict", "-tr", "../up"], "-tr '../up' is not a valid name"),
])
def test_export_errors_write_no_zip(results, tmp_path, capsys, argv, problem):
    zip_path = tmp_path / "m.zip"
    assert main_export(["-d", "42", "-o", str(zip_path)] + argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("longnet: error: ") and problem in err[0]
    assert not zip_path.exists() and not list(tmp_path.glob(".m.zip*"))


def _zip_with(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


GOOD = (f"{DATASET}/{TPC.format('2d')}/plans.json", b"{}", None)


@pytest.mark.parametrize("bad, problem", [
    (("../evil.txt", b"x", None), "leads outside the results folder"),
    (("Dataset042_Fake/../../evil.txt", b"x", None), "leads outside the results folder"),
    (("/tmp/evil.txt", b"x", None), "is an absolute path"),
    (("C:/evil.txt", b"x", None), "is an absolute path"),
    (("Dataset042_Fake\\..\\..\\evil.txt", b"x", None), "contains a backslash"),
    ((f"{DATASET}/link", b"/etc/passwd", stat.S_IFLNK | 0o777), "is a symbolic link"),
    ((f"{DATASET}/fifo", b"", stat.S_IFIFO | 0o644), "is not a regular file or folder"),
])
def test_install_refuses_unsafe_members_and_writes_nothing(tmp_path, monkeypatch, capsys, bad, problem):
    res = tmp_path / "results"
    res.mkdir()
    monkeypatch.setenv("LONGNET_RESULTS", str(res))
    zip_path = _zip_with(tmp_path / "evil.zip", [GOOD, bad])  # a good member first: it must not be written either
    assert main_install([str(zip_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and problem in err[0] and "evil.zip" in err[0]
    assert list(res.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip", "results"]


def test_install_refuses_corrupt_member_without_leftovers(tmp_path, monkeypatch, capsys):
    res = tmp_path / "results"
    res.mkdir()
    monkeypatch.setenv("LONGNET_RESULTS", str(res))
    zip_path = _zip_with(tmp_path / "bad.zip", [GOOD, (f"{DATASET}/b.txt", b"payload-payload", None)])
    raw = bytearray(zip_path.read_bytes())
    at = raw.index(b"payload-payload")
    raw[at] ^= 0xFF  # stored (uncompressed) member: flip one byte so the CRC check fails
    zip_path.write_bytes(bytes(raw))
    assert main_install([str(zip_path)]) == 1
    assert "nothing was installed" in capsys.readouterr().err
    assert list(res.iterdir()) == []


def test_install_refuses_file_over_existing_folder(tmp_path, monkeypatch, capsys):
    res = tmp_path / "results"
    (res / DATASET / TPC.format("2d") / "plans.json").mkdir(parents=True)
    monkeypatch.setenv("LONGNET_RESULTS", str(res))
    zip_path = _zip_with(tmp_path / "m.zip", [(f"{DATASET}/a.txt", b"a", None), GOOD])
    assert main_install([str(zip_path)]) == 1
    assert "a folder exists where the zip has a file" in capsys.readouterr().err
    assert not (res / DATASET / "a.txt").exists()


def test_install_not_a_zip(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LONGNET_RESULTS", str(tmp_path / "results"))
    _write(tmp_path / "m.zip", "not a zip")
    assert main_install([str(tmp_path / "m.zip")]) == 1
    assert "not a readable zip file" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
