"""Safe YAML loading that remembers where every value came from.

Hand-written YAML is untrusted input: we read PyYAML's safe parser *events*
(no Python tags can be constructed) and build plain dicts/lists ourselves, so
that every bound is checked before the work is done (file size, alias bombs,
deep nesting, huge or non-finite numbers, non-standard tags), and keep a map
``field.path -> line`` for one-line error messages.
"""
from __future__ import annotations

import math
import os
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from .errors import CostModelError, clip

MAX_FILE_BYTES = 2 * 1024 * 1024      # a model/hardware/what-if spec is a few KB
MAX_NODES = 50_000                    # values after alias expansion ("billion laughs"); a spec has < 1,000
MAX_DEPTH = 64

# libyaml's C parser when present (about 30x faster per event than pure Python,
# so even a file at the size limit is refused well within a second).
_EventLoader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader

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
    """Build plain values from parser *events* (never from a composed node
    graph), so every limit is checked before the work is done: nesting depth
    as each collection opens, the number of values (aliases count the full size
    of what they repeat) as each value is made, and no tag beyond plain YAML."""

    def __init__(self, file: str, events):
        self.file = file
        self.events = events
        self.lines: dict[str, int] = {}
        self.count = 0
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.resolver = Resolver()
        self.scalar = SafeConstructor()

    def err(self, mark, msg, path=""):
        raise CostModelError(msg, file=self.file, line=mark.line + 1 if mark is not None else None,
                             field=path or None)

    def _bump(self, n, mark, path):
        self.count += n
        if self.count > MAX_NODES:
            self.err(mark, f"document expands to more than {MAX_NODES} values (alias bomb?) "
                           f"(expected a small spec file)", path)

    def _tag(self, ev, kind, value=None, path=""):
        tag = ev.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(kind, value, ev.implicit if kind is yaml.ScalarNode else True)
        if tag not in _STD_TAGS:
            shown = "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag
            self.err(ev.start_mark, f"YAML tag {clip(shown)!r} is not allowed (expected plain YAML: mappings, "
                                    f"lists, strings, numbers, booleans)", path)
        return tag

    def build(self, ev, path: str = "", depth: int = 0):
        """The value that starts with event ``ev`` (its end event is consumed)."""
        if isinstance(ev, yaml.AliasEvent):
            if ev.anchor not in self.anchors:
                self.err(ev.start_mark, f"alias *{ev.anchor} refers to an unknown or enclosing anchor "
                                        f"(expected an anchor &{ev.anchor} defined earlier)", path)
            value, size = self.anchors[ev.anchor]
            self._bump(size, ev.start_mark, path)
            return value
        before = self.count
        self._bump(1, ev.start_mark, path)
        if isinstance(ev, yaml.ScalarEvent):
            value = self._scalar(ev, path)
        elif isinstance(ev, yaml.SequenceStartEvent):
            self._tag(ev, yaml.SequenceNode, None, path)
            self._depth(ev, path, depth)
            value = []
            while True:
                item = next(self.events)
                if isinstance(item, yaml.SequenceEndEvent):
                    break
                p = _join(path, len(value))
                self.lines.setdefault(p, item.start_mark.line + 1)
                value.append(self.build(item, p, depth + 1))
        elif isinstance(ev, yaml.MappingStartEvent):
            self._tag(ev, yaml.MappingNode, None, path)
            self._depth(ev, path, depth)
            value = {}
            while True:
                kev = next(self.events)
                if isinstance(kev, yaml.MappingEndEvent):
                    break
                if isinstance(kev, yaml.ScalarEvent) and kev.tag is None and kev.value == "<<" and kev.implicit[0]:
                    self.err(kev.start_mark, "YAML merge keys (<<) are not supported (expected plain keys)", path)
                if not isinstance(kev, (yaml.ScalarEvent, yaml.AliasEvent)):
                    self.err(kev.start_mark, "mapping keys must be plain scalars (expected name: value)", path)
                key = self.build(kev, path, depth + 1)
                if isinstance(key, (dict, list)):
                    self.err(kev.start_mark, "mapping keys must be plain scalars (expected name: value)", path)
                p = _join(path, key)
                if key in value:
                    self.err(kev.start_mark, f"duplicate key {key!r} (expected each field once)", p)
                self.lines.setdefault(p, kev.start_mark.line + 1)
                value[key] = self.build(next(self.events), p, depth + 1)
        else:  # pragma: no cover - the parser only yields the events above here
            self.err(ev.start_mark, f"unexpected YAML event {type(ev).__name__}", path)
        anchor = getattr(ev, "anchor", None)
        if anchor is not None:
            self.anchors[anchor] = (value, self.count - before)
        return value

    def _depth(self, ev, path, depth):
        if depth >= MAX_DEPTH:
            self.err(ev.start_mark, f"nested deeper than {MAX_DEPTH} levels (expected a flat spec file)", path)

    def _scalar(self, ev, path):
        tag = self._tag(ev, yaml.ScalarNode, ev.value, path)
        text = ev.value
        if tag == "tag:yaml.org,2002:timestamp":
            return text          # dates stay text: no spec field is a datetime
        if tag == "tag:yaml.org,2002:int" and len(text.replace("_", "").lstrip("+-0")) > 31:
            self.err(ev.start_mark, f"number {text[:20]!r}... is too large (expected at most 1e30)", path)
        node = yaml.ScalarNode(tag, text, ev.start_mark, ev.end_mark, ev.style)
        try:
            value = SafeConstructor.yaml_constructors[tag](self.scalar, node)
        except (ValueError, OverflowError, yaml.YAMLError):
            self.err(ev.start_mark, f"cannot read {text[:20]!r} as {tag.rsplit(':', 1)[-1]}", path)
        if isinstance(value, float) and not math.isfinite(value):
            self.err(ev.start_mark, f"number {text[:20]!r} is not finite (expected a finite number)", path)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
            self.err(ev.start_mark, f"number {text[:20]!r} is too large (expected at most 1e30)", path)
        return value


def loads(text: str, file: str = "<string>") -> Located:
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise CostModelError(f"file is larger than {MAX_FILE_BYTES // 1024} KiB (expected a small spec file)", file=file)
    events = yaml.parse(text, Loader=_EventLoader)
    b = _Builder(file, events)
    try:
        data = None
        ev = next(events)                       # StreamStart
        ev = next(events)
        if isinstance(ev, yaml.StreamEndEvent):
            raise CostModelError("file is empty (expected a mapping)", file=file, line=1)
        ev = next(events)                       # first event of the document's root
        b.lines[""] = ev.start_mark.line + 1
        data = b.build(ev)
        next(events)                            # DocumentEnd
        ev = next(events)
        if isinstance(ev, yaml.DocumentStartEvent):
            raise CostModelError("more than one YAML document ('---') (expected one document per file)",
                                 file=file, line=ev.start_mark.line + 1)
    except yaml.MarkedYAMLError as e:
        # libyaml notices a missing ':' on the next line: a simple key's own line is where to look
        use_ctx = e.context_mark is not None and (e.context or "").startswith("while scanning a simple key")
        mark = (e.context_mark if use_ctx else e.problem_mark) or e.context_mark
        line = mark.line + 1 if mark else None
        what = (e.problem or e.context or "syntax error").strip()
        if "nesting depth" in what:   # PyYAML >= 6.0.4 has its own (larger) depth limit
            raise CostModelError(f"nested deeper than {MAX_DEPTH} levels (expected a flat spec file)",
                                 file=file, line=line) from None
        if e.context and e.context_mark is not None and not use_ctx and e.context_mark.line + 1 != line:
            what += f" ({e.context.strip()} started on line {e.context_mark.line + 1})"
        raise CostModelError(f"invalid YAML: {what}", file=file, line=line) from None
    except yaml.YAMLError as e:  # pragma: no cover - defensive
        raise CostModelError(f"invalid YAML: {e}", file=file) from None
    except (RecursionError, MemoryError):  # pragma: no cover - the limits above come first
        raise CostModelError("document too large or nested too deeply (expected a small spec file)",
                             file=file) from None
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
