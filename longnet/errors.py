"""One exception type for every user-facing problem, so the CLIs can print one clear line and exit non-zero."""
from __future__ import annotations

from pathlib import Path


class LongnetError(Exception):
    """A problem caused by the user's input (file, flag or dataset), not a bug in longnet."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def __reduce__(self):  # survive pickling across worker processes with message and path intact
        return (_rebuild, (type(self), self.message, self.path, getattr(self, "problems", None)))


class DatasetError(LongnetError):
    """The raw or preprocessed dataset is malformed."""


class IntegrityError(DatasetError):
    """Dataset integrity verification found one or more problems (listed in `problems`)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"  {p}: {m}" for p, m in problems]
        super().__init__(f"dataset integrity check failed with {len(problems)} problem(s):\n" + "\n".join(lines))


def _rebuild(cls, message, path, problems):
    if problems is not None:
        return cls(problems)
    return cls(message, path)
