"""One error type for everything a user can get wrong.

Every message renders as one line: ``FILE:LINE: field.path: what is wrong (expected ...)``.
The CLI prints it after ``error:`` and exits with status 2.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class CostModelError(Exception):
    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self.render())

    def render(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts).replace("\n", " ")


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' for an unknown name, or ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
