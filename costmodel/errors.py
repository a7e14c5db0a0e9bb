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
            f = str(self.field)
            parts.append(f if len(f) <= 100 else f[:60] + "..." + f[-30:])
        parts.append(self.message)
        return ": ".join(parts).replace("\n", " ")


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' for an unknown name, or ''."""
    name = str(name)
    if len(name) > 200:      # nothing real is that long; difflib is quadratic
        return ""
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def clip(text: str, n: int = 60) -> str:
    """Shorten user-supplied text quoted in a message (a hostile 1 MB name stays one short line)."""
    text = str(text)
    return text if len(text) <= n else text[: n - 3] + "..."


def loc_path(loc: Iterable) -> str:
    """('layers', 3, 'kernel') -> 'layers[3].kernel'."""
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def pydantic_message(err: dict) -> str:
    """One pydantic error dict -> 'what is wrong (expected ...)'."""
    typ = err.get("type", "")
    ctx = err.get("ctx") or {}
    inp = err.get("input")
    got = clip(repr(inp)) if not isinstance(inp, (dict, list)) else ("a mapping" if isinstance(inp, dict)
                                                                      else "a list")
    msg = str(err.get("msg", "invalid value"))
    if typ == "missing":
        return "missing required field"
    if typ == "extra_forbidden":
        return "unknown field"
    if typ in ("int_parsing", "int_type", "int_from_float"):
        return f"{got} is not a whole number (expected an integer)"
    if typ in ("float_parsing", "float_type"):
        return f"{got} is not a number (expected a number)"
    if typ == "finite_number":
        return f"{got} is not finite (expected a finite number)"
    if typ in ("bool_parsing", "bool_type"):
        return f"{got} is not a boolean (expected true or false)"
    if typ == "string_type":
        return f"{got} is not text (expected a string)"
    if typ in ("list_type", "tuple_type"):
        return f"got {got} (expected a list)"
    if typ in ("dict_type", "model_type", "model_attributes_type"):
        return f"got {got} (expected a mapping of fields)"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if typ in bounds:
        lim = next(iter(ctx.values()), "?")
        word = "small" if typ.startswith("greater") else "large"
        return f"{got} is too {word} (expected a value {bounds[typ]} {_num(lim)})"
    if typ == "too_short":
        return f"has {ctx.get('actual_length', 0)} items (expected at least {ctx.get('min_length', 1)})"
    if typ == "too_long":
        return f"has {ctx.get('actual_length', '?')} items (expected at most {ctx.get('max_length', '?')})"
    if typ == "literal_error":
        expected = str(ctx.get("expected", ""))
        import re
        choices = re.findall(r"'([^']*)'", expected) or [c for c in re.findall(r"[\w.-]+", expected) if c != "or"]
        hint = suggest(str(inp), choices) if isinstance(inp, str) else ""
        return f"{got} is not allowed{hint} (expected one of: {', '.join(choices) or expected})"
    if typ in ("union_tag_invalid", "union_tag_not_found"):
        disc = str(ctx.get("discriminator", "type")).strip("'")
        if typ == "union_tag_not_found":
            return f"missing {disc} (expected a {disc} field)"
        import re
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        return (f"unknown {disc} {clip(repr(ctx.get('tag')))}{suggest(str(ctx.get('tag')), tags)} "
                f"(expected one of: {', '.join(tags)})")
    if typ == "value_error" or msg.startswith("Value error, "):
        return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg
    return f"{msg} (got {got})"
