"""Shared fixtures (tiny datasets, ../shared real data, one torch thread, installed example plugins) and the
slow / shared_data markers. Helper functions live in importable modules beside this file (raw_datasets,
tiny_seg_dataset, ...), never imported from here."""
from __future__ import annotations

from pathlib import Path

import pytest

from raw_datasets import REPO_ROOT, SHARED_DATA, make_raw_dataset


@pytest.fixture
def raw_dataset_factory(tmp_path):
    """`raw_dataset_factory(**kwargs)` -> make_raw_dataset(tmp_path, **kwargs)."""
    def factory(**kwargs):
        return make_raw_dataset(tmp_path, **kwargs)
    return factory


@pytest.fixture
def roots(tmp_path, monkeypatch) -> dict[str, Path]:
    """Empty raw / preprocessed / results folders under tmp_path, set as LONGNET_RAW, _PREPROCESSED, _RESULTS."""
    out = {k: tmp_path / k for k in ("raw", "pre", "res")}
    for k, v in out.items():
        v.mkdir()
        monkeypatch.setenv({"raw": "LONGNET_RAW", "pre": "LONGNET_PREPROCESSED", "res": "LONGNET_RESULTS"}[k], str(v))
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data folder (../shared/data next to the repo); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test, restored after: on the 2-core CI machine, tiny CPU networks run
    faster and deterministic that way (test modules opt in with `pytest.mark.usefixtures`)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def install_example(tmp_path_factory, monkeypatch):
    """Install examples/<folder> with pip into a scratch folder put on sys.path (unless `dist` is installed):
    discovery must go through the installed entry-point metadata, exactly as for a third-party package."""
    import importlib
    import importlib.metadata
    import subprocess
    import sys

    def install(folder: str, dist: str) -> None:
        try:
            importlib.metadata.distribution(dist)
            return
        except importlib.metadata.PackageNotFoundError:
            pass
        target = tmp_path_factory.mktemp("example_site")
        src = REPO_ROOT / "examples" / folder
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                               "--target", str(target), str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"could not pip-install examples/{folder}: {proc.stderr[-500:]}")
        monkeypatch.syspath_prepend(str(target))
        importlib.invalidate_caches()

    return install


# Modules that run whole commands end to end (seconds to minutes each on 2 cores) and modules that read ../shared.
SLOW_MODULES = {"test_demo_e2e", "test_tfm_e2e", "test_stamp_e2e", "test_longrep_training", "test_nnunet_parity",
                "test_nnunet_workflow_chain", "test_nnunet_workflow_2d", "test_kill_resume", "test_compile_ready",
                "test_plan_and_preprocess", "test_multinode", "test_example_visit_interval", "test_prior_seg",
                "test_natural_images_e2e", "test_training", "test_cascade", "test_learner", "test_clinimcl",
                "test_trainer_variants", "test_ensemble_postprocessing", "test_find_best", "test_alignment"}
SHARED_MODULES = {"test_nnunet_parity", "test_msd", "test_plan_and_preprocess", "test_ensemble_postprocessing"}


def pytest_collection_modifyitems(config, items):
    """`-m "not slow"` runs the quick tests; `-m shared_data` the ones that read ../shared."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if module in SHARED_MODULES or "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The tiny preprocessed segmentation dataset (tests/tiny_seg_dataset.py) with longnet's folders set to
    tmp_path; returns tmp_path."""
    from tiny_seg_dataset import make_tiny_dataset, set_env

    set_env(monkeypatch, tmp_path)
    make_tiny_dataset(tmp_path)
    return tmp_path
