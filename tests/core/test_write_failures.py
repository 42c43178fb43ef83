"""A full disk or a read-only output folder ends in one line `longnet: error: <path>: cannot write (...)`, exit 1,
no traceback and no temp file left behind; SIGTERM to a command ends in one line and exit 143.

Tests run as root, where chmod does not stop writes, so the failures are injected into longnet.utils.files' writer
(the one place every output goes through); a real full tmpfs is used too where mounting one is allowed."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import types
from pathlib import Path

import pytest

from raw_datasets import make_raw_dataset
from longnet.cli.common import run_cli
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.cli.train import main as train_main
from longnet.errors import LongnetError
from longnet.utils import files
from reliability_helpers import DATASET, assert_one_error, set_roots, temp_leftovers
from tiny_seg_dataset import DATASET as TINY, make_tiny_dataset, set_env

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARGS = ["-d", "999", "-c", "3d_fullres", "-np", "1"]


def _failing_os(monkeypatch, code: int, after: int = 0) -> None:
    """files.os.replace raises OSError(code) from its `after`-th call on (the rest of os is untouched)."""
    calls = [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] > after:
            raise OSError(code, os.strerror(code))
        return os.replace(src, dst)

    proxy = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    proxy.replace = replace
    monkeypatch.setattr(files, "os", proxy)


def _failing_mkstemp(monkeypatch, code: int) -> None:
    def mkstemp(*args, **kwargs):
        raise OSError(code, os.strerror(code), kwargs.get("dir"))

    monkeypatch.setattr(files, "tempfile", types.SimpleNamespace(mkstemp=mkstemp))


@pytest.mark.parametrize("after", [0, 3])
def test_full_disk_during_plan_and_preprocess(tmp_path, monkeypatch, capsys, after):
    roots = set_roots(monkeypatch, tmp_path)
    make_raw_dataset(roots["raw"], n_cases=4)
    _failing_os(monkeypatch, errno.ENOSPC, after)
    assert main_plan_and_preprocess(ARGS) == 1
    line = assert_one_error(capsys.readouterr().err)
    assert "cannot write (No space left on device)" in line and str(roots["pre"] / DATASET) in line
    assert temp_leftovers(roots["pre"]) == []


@pytest.mark.parametrize("code,text", [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left")])
def test_unwritable_results_folder_during_training(tmp_path, monkeypatch, capsys, code, text):
    set_env(monkeypatch, tmp_path)
    make_tiny_dataset(tmp_path)
    _failing_mkstemp(monkeypatch, code)
    assert train_main([TINY, "3d_fullres", "0", "--epochs", "1", "--iters-per-epoch", "1", "-device", "cpu"]) == 1
    line = assert_one_error(capsys.readouterr().err)
    assert f"cannot write ({text}" in line and str(tmp_path / "results" / TINY) in line


def test_library_write_errors_without_errno_are_diagnosed(tmp_path, monkeypatch):
    """torch.save and blosc2 report a full disk as RuntimeError; the file system then says why."""
    monkeypatch.setattr(files, "disk_problem", lambda folder: os.strerror(errno.ENOSPC))
    with pytest.raises(LongnetError, match=r"cannot write \(No space left on device\)") as e:
        with files.atomic_path(tmp_path / "x.pth"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert e.value.path == str(tmp_path / "x.pth") and temp_leftovers(tmp_path) == []


def test_other_errors_inside_a_write_are_not_disguised(tmp_path):
    """A bug, or an unreadable source file, must not be reported as a write failure."""
    with pytest.raises(ZeroDivisionError):
        with files.atomic_path(tmp_path / "a.json"):
            1 / 0
    with pytest.raises(FileNotFoundError):
        with files.atomic_path(tmp_path / "b.json") as tmp:
            import shutil

            shutil.copyfile(tmp_path / "missing.json", tmp)
    assert temp_leftovers(tmp_path) == []


def test_oserror_reaching_a_command_is_one_line(capsys):
    def fn(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/x.json")

    assert run_cli(fn) == 1
    assert assert_one_error(capsys.readouterr().err) == \
        "longnet: error: /data/out/x.json: cannot write (No space left on device)"


def test_sigterm_to_a_command_is_one_line_and_143(capsys):
    def fn(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
        raise AssertionError("SIGTERM did not stop the command")

    previous = signal.getsignal(signal.SIGTERM)
    assert run_cli(fn) == 143
    err = capsys.readouterr().err
    assert err.startswith("longnet: stopped by SIGTERM") and len(err.splitlines()) == 1
    assert signal.getsignal(signal.SIGTERM) == previous  # restored for in-process callers


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (skipped where mounting one is not allowed); unmounted afterwards."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


# free KiB -> where the disk runs full: the dataset files or copying a label (OSError, or a write that fills the disk
# to the last page), or writing a blosc2 array (RuntimeError)
@pytest.mark.parametrize("free_kib,stage", [(12, "Dataset999_Test"), (120, "nnUNetPlans_3d_fullres")])
def test_real_full_disk(tmp_path, monkeypatch, capsys, small_tmpfs, free_kib, stage):
    with open(small_tmpfs / "filler", "wb") as f:
        try:
            f.write(b"\0" * (1024 * 1024 - free_kib * 1024))
        except OSError:
            pass
    roots = set_roots(monkeypatch, tmp_path)
    monkeypatch.setenv("LONGNET_PREPROCESSED", str(small_tmpfs / "pre"))
    make_raw_dataset(roots["raw"], n_cases=4, shape=(24, 24, 20))
    assert main_plan_and_preprocess(ARGS) == 1
    line = assert_one_error(capsys.readouterr().err)
    assert "cannot write (No space left on device)" in line and str(small_tmpfs / "pre") in line
    assert f"/{stage}/" in line
    assert temp_leftovers(small_tmpfs) == []


def test_outputs_get_the_usual_permissions(tmp_path):
    """Temp files are private while written; what is published is readable as any file the user writes (umask)."""
    import stat

    from longnet.utils.files import save_json, staging_dir

    mask = os.umask(0o022)
    try:
        save_json({"a": 1}, tmp_path / "x.json")
        folder = staging_dir(tmp_path, ".build.")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_outputs_follow_links_and_never_replace_devices_or_pipes(tmp_path):
    from longnet.utils.files import save_json

    target = tmp_path / "target.json"
    target.write_text("{}")
    (tmp_path / "link.json").symlink_to(target)
    save_json({"a": 1}, tmp_path / "link.json")
    assert (tmp_path / "link.json").is_symlink() and json.loads(target.read_text()) == {"a": 1}
    os.mkfifo(tmp_path / "pipe")
    for dest in (tmp_path / "pipe", Path("/dev/null"), tmp_path):
        with pytest.raises(LongnetError, match="not a regular file"):
            save_json({}, dest)
    assert Path("/dev/null").is_char_device()
