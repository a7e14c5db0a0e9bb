"""Safe YAML loading that remembers where every value came from.

Hand-written YAML is untrusted input: we compose the node graph with PyYAML's
SafeLoader (no Python tags can be constructed), then build plain dicts/lists
ourselves so that we can bound the work (alias bombs, deep nesting, huge files)
and keep a map ``field.path -> line`` for one-line error messages.
"""
from __future__ import annotations

import math
import os
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from .errors import CostModelError

MAX_FILE_BYTES = 2 * 1024 * 1024      # a model/hardware/what-if spec is a few KB
MAX_NODES = 200_000                   # bounds alias expansion ("billion laughs")
MAX_DEPTH = 64

_STD_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq", "tag:yaml.org,2002:timestamp",
}


class Located:
    """A loaded document plus the line of each field path ('a.b[2].c')."""

    def __init__(self, data: Any, lines: dict[str, int], file: str):
        self.data = data
        self.lines = lines
        self.file = file

    def line_of(self, path: str) -> int | None:
        # walk up to the closest known ancestor
        while path:
            if path in self.lines:
                return self.lines[path]
            if "[" in path and path.endswith("]"):
                path = path[: path.rfind("[")]
            elif "." in path:
                path = path[: path.rfind(".")]
            else:
                break
        return self.lines.get(path, self.lines.get("", None))


def _join(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.lines: dict[str, int] = {}
        self.count = 0
        self.scalar = SafeConstructor()

    def err(self, node, msg, path=""):
        raise CostModelError(msg, file=self.file, line=node.start_mark.line + 1, field=path or None)

    def build(self, node, path: str = "", depth: int = 0):
        self.count += 1
        if self.count > MAX_NODES:
            self.err(node, f"document expands to more than {MAX_NODES} values (alias bomb?)", path)
        if depth > MAX_DEPTH:
            self.err(node, f"nested deeper than {MAX_DEPTH} levels", path)
        if node.tag not in _STD_TAGS:
            self.err(node, f"YAML tag {node.tag!r} is not allowed (plain YAML only)", path)
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for knode, vnode in node.value:
                if knode.tag == "tag:yaml.org,2002:merge":
                    self.err(knode, "YAML merge keys (<<) are not supported", path)
                key = self.build(knode, path, depth + 1)
                if isinstance(key, (dict, list)):
                    self.err(knode, "mapping keys must be plain scalars", path)
                if key in out:
                    self.err(knode, f"duplicate key {key!r}", _join(path, key))
                out[key] = self.build(vnode, _join(path, key), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(v, _join(path, i), depth + 1) for i, v in enumerate(node.value)]
        value = self.scalar.construct_object(node, deep=True)
        if isinstance(value, float) and not math.isfinite(value):
            self.err(node, f"number {node.value!r} is not finite (expected a finite number)", path)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
            self.err(node, f"number {node.value[:20]!r} is too large (expected at most 1e30)", path)
        return value


def loads(text: str, file: str = "<string>") -> Located:
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise CostModelError(f"file is larger than {MAX_FILE_BYTES // 1024} KiB (expected a small spec file)", file=file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = (e.problem or e.context or "syntax error").strip()
        raise CostModelError(f"invalid YAML: {what}", file=file, line=line) from None
    except yaml.YAMLError as e:  # pragma: no cover - defensive
        raise CostModelError(f"invalid YAML: {e}", file=file) from None
    except RecursionError:
        raise CostModelError(f"nested deeper than {MAX_DEPTH} levels", file=file) from None
    if node is None:
        raise CostModelError("file is empty (expected a mapping)", file=file, line=1)
    b = _Builder(file)
    try:
        data = b.build(node)
    except RecursionError:
        raise CostModelError(f"nested deeper than {MAX_DEPTH} levels", file=file) from None
    return Located(data, b.lines, file)


def load_file(path: str | os.PathLike) -> Located:
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise CostModelError(f"cannot read file ({e.strerror})", file=path) from None
    if size > MAX_FILE_BYTES:
        raise CostModelError(f"file is {size / 1e6:.1f} MB, larger than the {MAX_FILE_BYTES // 1024} KiB limit "
                             "(expected a small spec file)", file=path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise CostModelError("file is not UTF-8 text", file=path) from None
    except OSError as e:
        raise CostModelError(f"cannot read file ({e.strerror})", file=path) from None
    return loads(text, path)
