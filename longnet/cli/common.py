"""Shared CLI wrapper: a user's mistake (LongnetError) or the environment's (OSError) becomes one clear stderr line and
exit code 1, not a traceback."""
from __future__ import annotations

import argparse
import errno
import functools
import signal
import sys
import threading
from typing import Callable, Sequence

from longnet.errors import LongnetError

Argv = Sequence[str] | None


def run_cli(fn: Callable[[Argv], int | None], argv: Argv = None) -> int:
    """Call `fn(argv)` and turn its outcome into an exit code.

    LongnetError -> `longnet: error: <path>: <message>` on stderr, 1; an OSError (full disk, read-only or missing
    folder: the environment, not a bug) -> the same one line naming its file, 1; KeyboardInterrupt -> 130;
    SIGTERM -> one line, 143; argparse's SystemExit -> its code (so in-process callers get an int back); anything
    else is a bug and propagates.
    """
    installed = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if installed else None
    try:
        rc = fn(argv)
    except Terminated:
        _end_progress_bars()
        print("longnet: stopped by SIGTERM; rerun the same command to continue (finished outputs are kept)",
              file=sys.stderr)
        return 143
    except LongnetError as e:
        _end_progress_bars()
        print(f"longnet: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        _end_progress_bars()
        print(f"longnet: error: {os_error_text(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _end_progress_bars()
        print("longnet: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return 0 if rc is None else int(rc)


def _end_progress_bars() -> None:
    """Close progress bars an error cut short, so the message starts a line of its own instead of trailing one."""
    tqdm_module = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm_module, "tqdm", None), "_instances", None) or []):
        try:
            bar.close()
        except Exception:  # a bar whose stream is gone: nothing to tidy up
            pass


class Terminated(BaseException):
    """SIGTERM (a scheduler stopping the job) reached a command: it unwinds like KeyboardInterrupt, so atomic writes
    remove their temp files, and the command exits 143 with one line. Training installs its own handler, which
    checkpoints first."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def os_error_text(error: OSError) -> str:
    """`<file>: cannot write (No space left on device)`-style text for an OSError that reached a command."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EROFS, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)):
        reason = f"cannot write ({reason})"
    return f"{error.filename}: {reason}" if error.filename is not None else reason


def print_warnings(items: list[tuple[object, str]], limit: int = 10) -> None:
    """`longnet: warning: <file>: <message>` lines on stderr (at most `limit`, then a count): suspicious input that
    is still usable, so the run goes on."""
    for path, message in items[:limit]:
        print(f"longnet: warning: {path}: {message}", file=sys.stderr)
    if len(items) > limit:
        print(f"longnet: warning: ... and {len(items) - limit} more like these", file=sys.stderr)


def cli_main(fn: Callable[[Argv], int | None]) -> Callable[[Argv], int]:
    """Decorator form of run_cli: `@cli_main def main(argv=None): ...`."""

    @functools.wraps(fn)
    def main(argv: Argv = None) -> int:
        return run_cli(fn, argv)

    return main


class HelpFormatter(argparse.HelpFormatter):
    """Appends `(default: X)` to an option's help unless its text already names the default, so `-h` shows every
    default once (argparse's ArgumentDefaultsHelpFormatter repeats it, and prints `None` for computed defaults)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.required or not action.option_strings or action.nargs == 0:
            return text
        if action.default is None or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def help_requested(argv: Sequence[str] | None) -> bool:
    """True when -h/--help appears before a `--` (argparse would print help): lets a command skip slow work, such
    as importing a trainer, that only matters for a real run."""
    args = sys.argv[1:] if argv is None else list(argv)
    for a in args:
        if a == "--":
            return False
        if a in ("-h", "--help"):
            return True
    return False


def check_name(value: str, flag: str) -> str:
    """A flag value that becomes part of a folder or file name (-tr, -p, -c) must not lead outside its folder."""
    if not value or "/" in value or "\\" in value or ".." in value or value.startswith("."):
        raise LongnetError(f"{flag} {value!r} is not a valid name (no path separators, no '..', no leading '.')")
    return value
