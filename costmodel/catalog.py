"""Find and load model / hardware specs: built-in names, YAML paths, user dirs."""
from __future__ import annotations

import os
import re
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import CostModelError, clip, loc_path, pydantic_message, suggest
from .specs.hardware import Hardware
from .specs.model import CNNSpec, ModelSpec
from .yamlio import Located, load_file

_PKG = Path(__file__).resolve().parent


def _data_dir(kind: str) -> Path:
    # installed wheel: costmodel/_data/<kind>; source / editable checkout: <repo>/<kind>
    for d in (_PKG / "_data" / kind, _PKG.parent / kind):
        if d.is_dir():
            return d
    return _PKG.parent / kind


def builtin_dir(kind: str) -> Path:
    return _data_dir(kind)


def _names(dirs: list[Path]) -> dict[str, Path]:
    """name -> file over the folders, first folder wins. Cached per folder and
    its modification time, so adding or removing a file is seen at once."""
    out: dict[str, Path] = {}
    for d in dirs:
        try:
            mtime = d.stat().st_mtime_ns
        except OSError:
            continue
        for stem, f in _folder_index(str(d), mtime):
            out.setdefault(stem, f)
    return out


@lru_cache(maxsize=64)
def _folder_index(folder: str, mtime_ns: int) -> tuple:
    d = Path(folder)
    return tuple((f.stem, f) for f in sorted(d.glob("*.yaml"))) if d.is_dir() else ()


def model_names(extra_dirs=()) -> dict[str, Path]:
    return _names([Path(d) for d in extra_dirs] + [_data_dir("models")])


def hardware_names(extra_dirs=()) -> dict[str, Path]:
    return _names([Path(d) for d in extra_dirs] + [_data_dir("hardware")])


_MODEL_ADAPTER = TypeAdapter(ModelSpec)


def _unwrap(ann):
    """('union', members) | ('list', item) | ('dict', value) | ('model', cls) | ('leaf', ann)."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) == 1:
                ann = args[0]
                continue
            return "union", args
        break
    if origin in (list, tuple, set):
        args = typing.get_args(ann)
        return "list", (args[0] if args else Any)
    if origin is dict:
        args = typing.get_args(ann)
        return "dict", (args[1] if len(args) == 2 else Any)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "model", ann
    return "leaf", ann


def _union_member(members, tag):
    """The member of a discriminated union (on 'arch' or 'type') whose tag is ``tag``."""
    for m in members:
        kind, cls = _unwrap(m)
        if kind != "model":
            continue
        for disc in ("arch", "type"):
            f = cls.model_fields.get(disc)
            if f is not None and tag in typing.get_args(f.annotation):
                return cls
    return None


def _field(cls, name):
    f = cls.model_fields.get(name)
    if f is None:
        f = next((v for v in cls.model_fields.values() if v.alias == name), None)
    return f


def field_names(cls) -> list[str]:
    return [f.alias or k for k, f in cls.model_fields.items()]


def clean_loc(root, loc) -> tuple[tuple, Any, Any]:
    """Drop the discriminated-union tags pydantic puts into an error location
    (('transformer', 'heads') -> ('heads',); ('cnn', 'layers', 3, 'conv', 'kernel')
    -> ('layers', 3, 'kernel')), by walking the schema rather than guessing from
    names.  Returns (clean loc, model class holding the last element or None,
    annotation reached at the end)."""
    ann, out, holder = root, [], None
    for p in loc:
        kind, x = _unwrap(ann)
        if kind == "union":
            member = _union_member(x, p) if isinstance(p, str) else None
            if member is not None:
                ann = member
                continue
            holder, ann = None, Any
        elif kind == "model":
            holder = x
            f = _field(x, p) if isinstance(p, str) else None
            ann = f.annotation if f is not None else Any
        elif kind in ("list", "dict"):
            holder, ann = None, x
        else:
            holder, ann = None, Any
        out.append(p)
    return tuple(out), holder, ann


def _describe(f) -> str:
    ann = f.annotation
    kind, x = _unwrap(ann)
    if kind == "model":
        return "a mapping of fields"
    if kind == "list":
        return "a list"
    if typing.get_origin(x) is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in typing.get_args(x))
    bound = next((f"> {m.gt}" for m in f.metadata if getattr(m, "gt", None) is not None), "")
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
    return (names.get(x, "a value") + (" " + bound if bound and x in (int, float) else "")).strip()


def pydantic_error(e: ValidationError, loc: Located, prefix: str = "", root=None) -> CostModelError:
    """The first validation error as a one-line CostModelError with file:line.
    ``root``: the schema validated against (ModelSpec by default)."""
    return validation_error(first_error(e), root if root is not None else ModelSpec, loc=loc, prefix=prefix)


def first_error(e: ValidationError) -> dict:
    """The error to show: an unknown field first (a misspelt name also shows up
    as the 'missing' field it was meant to be, and only the unknown one can say
    'did you mean'), else pydantic's first."""
    errs = e.errors()
    return next((x for x in errs if x["type"] == "extra_forbidden"), errs[0])


def validation_error(err: dict, root, loc: Located | None = None, prefix: str = "") -> CostModelError:
    """One pydantic error dict -> CostModelError: field path without union tags,
    close-name suggestions for unknown fields, the line of the field in the file."""
    path_loc, holder, reached = clean_loc(root, err["loc"])
    msg = pydantic_message(err)
    typ = err["type"]
    if typ == "extra_forbidden" and holder is not None:
        fields = field_names(holder)
        msg = "unknown field" + (suggest(str(path_loc[-1]), fields)
                                 or f" (expected one of: {', '.join(fields)})")
    elif typ == "missing" and holder is not None and _field(holder, path_loc[-1]) is not None:
        msg = f"missing required field (expected {_describe(_field(holder, path_loc[-1]))})"
    elif typ in ("union_tag_invalid", "union_tag_not_found"):
        disc = str((err.get("ctx") or {}).get("discriminator", "")).strip("'")
        if disc:                        # point at the arch: / type: line itself
            path_loc = path_loc + (disc,)
            kind, members = _unwrap(reached)
            if typ == "union_tag_not_found" and kind == "union":
                tags = [t for m in members for c in [_unwrap(m)[1]] if isinstance(c, type)
                        and disc in getattr(c, "model_fields", {}) for t in typing.get_args(c.model_fields[disc].annotation)]
                msg = f"missing required field (expected {disc}: {'|'.join(map(str, tags))})"
    elif typ == "value_error":
        # a model-level check ('heads (7) does not divide d_model (768) ...') names its field first
        kind, cls = _unwrap(reached)
        m = re.match(r"\s*(\w+)", msg)
        if kind == "model" and m and _field(cls, m.group(1)) is not None:
            path_loc = path_loc + (m.group(1),)
    path = loc_path(path_loc)
    line = loc.line_of(path) if loc is not None else None
    return CostModelError(msg, file=loc.file if loc is not None else None, line=line,
                          field=(prefix + path) if path else (prefix.rstrip(".") or None))


def _validate_model(data: Any, loc: Located):
    if not isinstance(data, dict):
        raise CostModelError("expected a mapping of model fields (name: value lines)", file=loc.file, line=1)
    if "arch" not in data:
        raise CostModelError("missing required field (expected arch: transformer|vit|cnn|rnn|mlp)",
                             file=loc.file, line=loc.line_of(""), field="arch")
    try:
        spec = _MODEL_ADAPTER.validate_python(data)
    except ValidationError as e:
        raise pydantic_error(e, loc) from None
    if isinstance(spec, CNNSpec):
        bad = cnn_shape_error(spec, spec.image_size)
        if bad is not None:
            raise CostModelError(_cnn_message(spec, bad), file=loc.file, line=loc.line_of(bad.path), field=bad.path)
    return spec


def cnn_shape_error(spec: CNNSpec, image: int):
    """The ``CNNShapeError`` of the first layer of a CNN that cannot run at
    ``image`` x ``image`` pixels (empty output, linear before flatten, residual
    body and shortcut of different shapes, groups that do not divide the
    channels, ...), else None. One source of truth: the CNN builder itself,
    run at batch 1 (well under a millisecond). Output size per conv/pool:
    floor((size + 2p - (k-1) - 1)/s) + 1 (torch.nn.Conv2d docs)."""
    from .build import CNNShapeError, Shape, build_cnn
    from .ops import Precision
    try:
        build_cnn(spec, Shape(batch=1, image=image), Precision.of("fp32"))
    except CNNShapeError as e:
        return e
    return None


def _cnn_message(spec: CNNSpec, e) -> str:
    if e.empty:
        return (f"{e.message} (expected an image of at least {cnn_min_image(spec)} pixels, or a smaller "
                f"kernel / more padding)")
    return e.message


_SHAPE_OK: dict = {}


def cnn_shape_problem(spec: CNNSpec, image: int) -> tuple[int, str] | None:
    """(top-level layer index, message) for the first layer of a CNN that
    cannot run at ``image`` x ``image`` pixels, else None; a layer nested in a
    residual / concat block is named in the message (``body[2]: ...``).
    Remembered per (spec object, image): sweeps ask again for every case."""
    key = (id(spec), image)
    hit = _SHAPE_OK.get(key)
    if hit is not None and hit is spec:
        return None
    e = cnn_shape_error(spec, image)
    if e is None:
        if len(_SHAPE_OK) > 512:
            _SHAPE_OK.clear()
        _SHAPE_OK[key] = spec          # holding the spec keeps its id from being reused
        return None
    sub = e.path[len(f"layers[{e.li}]"):].lstrip(".")
    return e.li, (f"{sub}: " if sub else "") + _cnn_message(spec, e)


def cnn_min_image(spec: CNNSpec, limit: int = 16384) -> str:
    """Smallest image side for which every layer has a non-empty output ('?' if none up to ``limit``)."""
    def ok(img):
        e = cnn_shape_error(spec, img)
        return e is None or not e.empty
    lo, hi = 1, limit
    if not ok(hi):
        return "?"
    while lo < hi:                     # output size is monotone in the input size
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return str(lo)


def parse_model(data: dict, file: str = "<inline>", loc: Located | None = None):
    if loc is None:
        loc = Located(data, {}, file)
    return _validate_model(data, loc)


@lru_cache(maxsize=256)
def _load_model_path(path: str, mtime: float, shown: str | None = None):
    # cached by absolute path + mtime; errors name the file as the user typed it
    loc = load_file(shown or path)
    return _validate_model(loc.data, loc)


@lru_cache(maxsize=256)
def _load_hw_path(path: str, mtime: float, shown: str | None = None) -> Hardware:
    loc = load_file(shown or path)
    if not isinstance(loc.data, dict):
        raise CostModelError("expected a mapping of hardware fields (name: value lines)", file=loc.file, line=1)
    try:
        return Hardware.model_validate(loc.data)
    except ValidationError as e:
        raise pydantic_error(e, loc, root=Hardware) from None


def _is_path(s: str) -> bool:
    return s.endswith((".yaml", ".yml", ".json")) or os.sep in s or s.startswith(".")


def load_model(name_or_path, models_dir=()):
    """A model spec from a built-in name, a YAML path, or a HF config.json path."""
    if not isinstance(name_or_path, str):
        return name_or_path
    s = name_or_path
    if _is_path(s):
        if not os.path.exists(s):
            raise CostModelError("no such file (expected a model YAML or config.json path, or a built-in name)",
                                 file=clip(s, 200))
        if s.endswith(".json"):
            from .hf import load_hf_config
            return load_hf_config(s)
        return _load_model_path(os.path.abspath(s), os.path.getmtime(s), s)
    names = model_names(models_dir)
    if s not in names:
        raise CostModelError(f"unknown model {clip(repr(s))}{suggest(s, names)} "
                             f"(expected a built-in name from `costmodel models`, or a YAML path)")
    f = names[s]
    return _load_model_path(str(f), f.stat().st_mtime)


def load_hardware(name_or_path, hardware_dir=()) -> Hardware:
    if isinstance(name_or_path, Hardware):
        return name_or_path
    s = name_or_path
    if _is_path(s):
        if not os.path.exists(s):
            raise CostModelError("no such file (expected a hardware YAML path, or a built-in name)",
                                 file=clip(s, 200))
        return _load_hw_path(os.path.abspath(s), os.path.getmtime(s), s)
    names = hardware_names(hardware_dir)
    if s not in names:
        raise CostModelError(f"unknown hardware {clip(repr(s))}{suggest(s, names)} "
                             f"(expected a built-in name from `costmodel hardware`, or a YAML path)")
    f = names[s]
    return _load_hw_path(str(f), f.stat().st_mtime)
