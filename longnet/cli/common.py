"""Shared CLI wrapper: a user's mistake (LongnetError) becomes one clear stderr line and exit code 1, not a traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, Sequence

from longnet.errors import LongnetError

Argv = Sequence[str] | None


def run_cli(fn: Callable[[Argv], int | None], argv: Argv = None) -> int:
    """Call `fn(argv)` and turn its outcome into an exit code.

    LongnetError -> `longnet: error: <path>: <message>` on stderr, 1; KeyboardInterrupt -> 130; argparse's
    SystemExit -> its code (so in-process callers get an int back); anything else is a bug and propagates.
    """
    try:
        rc = fn(argv)
    except LongnetError as e:
        print(f"longnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("longnet: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    return 0 if rc is None else int(rc)


def cli_main(fn: Callable[[Argv], int | None]) -> Callable[[Argv], int]:
    """Decorator form of run_cli: `@cli_main def main(argv=None): ...`."""

    @functools.wraps(fn)
    def main(argv: Argv = None) -> int:
        return run_cli(fn, argv)

    return main


def check_name(value: str, flag: str) -> str:
    """A flag value that becomes part of a folder or file name (-tr, -p, -c) must not lead outside its folder."""
    if not value or "/" in value or "\\" in value or ".." in value or value.startswith("."):
        raise LongnetError(f"{flag} {value!r} is not a valid name (no path separators, no '..', no leading '.')")
    return value
