"""Find and load model / hardware specs: built-in names, YAML paths, user dirs."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .errors import CostModelError, suggest
from .specs.hardware import Hardware
from .specs.model import ModelSpec
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
    out: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")):
                out.setdefault(f.stem, f)
    return out


def model_names(extra_dirs=()) -> dict[str, Path]:
    return _names([Path(d) for d in extra_dirs] + [_data_dir("models")])


def hardware_names(extra_dirs=()) -> dict[str, Path]:
    return _names([Path(d) for d in extra_dirs] + [_data_dir("hardware")])


_MODEL_ADAPTER = TypeAdapter(ModelSpec)


def pydantic_error(e: ValidationError, loc: Located, prefix: str = "") -> CostModelError:
    """The first validation error as a one-line CostModelError with file:line."""
    err = e.errors()[0]
    parts = []
    for p in err["loc"]:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            # discriminated unions insert the tag ('transformer', 'conv') into the location
            parts.append(("." if parts else "") + str(p))
    path = "".join(parts)
    # drop union tags that are not real fields
    clean = _clean_path(path, loc)
    msg = err["msg"]
    typ = err["type"]
    if typ == "extra_forbidden":
        msg = "unknown field"
        parent = clean.rsplit(".", 1)[0] if "." in clean else ""
        known = _known_fields(err, e)
        if known:
            msg += suggest(clean.rsplit(".", 1)[-1], known) or f" (expected one of: {', '.join(sorted(known))})"
    elif typ == "missing":
        msg = "missing required field"
    elif typ in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx", {})
        msg = f"{err['msg']}"
        if "tag" in ctx and "expected_tags" in ctx:
            msg = f"unknown value {ctx['tag']!r} (expected one of: {ctx['expected_tags']})"
    else:
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        inp = err.get("input")
        if not isinstance(inp, (dict, list)) and typ != "value_error":
            msg = f"{msg} (got {inp!r})"
    line = loc.line_of(prefix + clean if prefix else clean)
    return CostModelError(msg, file=loc.file, line=line, field=(prefix + clean) or None)


def _clean_path(path: str, loc: Located) -> str:
    # remove discriminator tags that pydantic puts in loc (e.g. 'transformer.layers' -> 'layers')
    segs = path.split(".")
    out = []
    cur = ""
    for s in segs:
        cand = f"{cur}.{s}" if cur else s
        base = s.split("[")[0]
        if base in ("transformer", "vit", "cnn", "rnn", "mlp", "conv", "bn", "relu", "gelu", "silu", "tanh",
                    "sigmoid", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "flatten",
                    "linear", "dropout", "resnet_stage") and cand not in loc.lines:
            rest = s[len(base):]
            if rest:
                cur = cur + rest
            continue
        cur = cand
        out.append(s)
    return cur


def _known_fields(err, e: ValidationError) -> list[str]:
    return []


def _validate_model(data: Any, loc: Located):
    if not isinstance(data, dict):
        raise CostModelError("expected a mapping of model fields", file=loc.file, line=1)
    if "arch" not in data:
        raise CostModelError("missing required field (expected arch: transformer|vit|cnn|rnn|mlp)",
                             file=loc.file, line=loc.line_of(""), field="arch")
    try:
        return _MODEL_ADAPTER.validate_python(data)
    except ValidationError as e:
        raise _with_known(e, loc, data) from None


def _with_known(e: ValidationError, loc: Located, data: dict) -> CostModelError:
    err = pydantic_error(e, loc)
    first = e.errors()[0]
    if first["type"] == "extra_forbidden":
        fields = _fields_at(data, first["loc"])
        if fields:
            name = str(first["loc"][-1])
            hint = suggest(name, fields)
            err = CostModelError("unknown field" + (hint or f" (expected one of: {', '.join(sorted(fields))})"),
                                 file=err.file, line=err.line, field=err.field)
    return err


def _fields_at(data: dict, loc: tuple) -> list[str]:
    """Names of valid fields of the schema object that holds loc[-1]."""
    from .specs import model as m
    cls_by_arch = {"transformer": m.TransformerSpec, "vit": m.ViTSpec, "cnn": m.CNNSpec, "rnn": m.RNNSpec,
                   "mlp": m.MLPSpec}
    layer_cls = {"conv": m.Conv, "bn": m.BatchNorm, "maxpool": m.Pool, "avgpool": m.Pool,
                 "adaptive_avgpool": m.AdaptivePool, "adaptive_maxpool": m.AdaptivePool, "flatten": m.Flatten,
                 "linear": m.Linear, "dropout": m.Dropout, "resnet_stage": m.ResStage,
                 "relu": m.Act, "gelu": m.Act, "silu": m.Act, "tanh": m.Act, "sigmoid": m.Act}
    cls = None
    for p in loc[:-1]:
        if cls is None and p in cls_by_arch:
            cls = cls_by_arch[p]
        elif p in layer_cls:
            cls = layer_cls[p]
        elif isinstance(p, str) and cls is not None and p in cls.model_fields:
            ann = cls.model_fields[p].annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                cls = ann
    if cls is None:
        return []
    return [f.alias or k for k, f in cls.model_fields.items()]


def parse_model(data: dict, file: str = "<inline>", loc: Located | None = None):
    if loc is None:
        loc = Located(data, {}, file)
    return _validate_model(data, loc)


@lru_cache(maxsize=256)
def _load_model_path(path: str, mtime: float):
    loc = load_file(path)
    return _validate_model(loc.data, loc)


@lru_cache(maxsize=256)
def _load_hw_path(path: str, mtime: float) -> Hardware:
    loc = load_file(path)
    if not isinstance(loc.data, dict):
        raise CostModelError("expected a mapping of hardware fields", file=path, line=1)
    try:
        return Hardware.model_validate(loc.data)
    except ValidationError as e:
        err = pydantic_error(e, loc)
        first = e.errors()[0]
        if first["type"] == "extra_forbidden":
            cls = Hardware
            for p in first["loc"][:-1]:
                ann = cls.model_fields.get(p).annotation if p in cls.model_fields else None
                import typing
                args = [a for a in typing.get_args(ann) if isinstance(a, type)] if ann else []
                cand = ann if isinstance(ann, type) else (args[0] if args else None)
                if cand is not None and hasattr(cand, "model_fields"):
                    cls = cand
            fields = list(cls.model_fields)
            err = CostModelError("unknown field" + (suggest(str(first["loc"][-1]), fields)
                                                    or f" (expected one of: {', '.join(fields)})"),
                                 file=err.file, line=err.line, field=err.field)
        raise err from None


def _is_path(s: str) -> bool:
    return s.endswith((".yaml", ".yml", ".json")) or os.sep in s or s.startswith(".")


def load_model(name_or_path, models_dir=()):
    """A model spec from a built-in name, a YAML path, or a HF config.json path."""
    if not isinstance(name_or_path, str):
        return name_or_path
    s = name_or_path
    if _is_path(s):
        if not os.path.exists(s):
            raise CostModelError("no such file", file=s)
        if s.endswith(".json"):
            from .hf import load_hf_config
            return load_hf_config(s)
        return _load_model_path(os.path.abspath(s), os.path.getmtime(s))
    names = model_names(models_dir)
    if s not in names:
        raise CostModelError(f"unknown model {s!r}{suggest(s, names)} (see `costmodel models`)")
    f = names[s]
    return _load_model_path(str(f), f.stat().st_mtime)


def load_hardware(name_or_path, hardware_dir=()) -> Hardware:
    if isinstance(name_or_path, Hardware):
        return name_or_path
    s = name_or_path
    if _is_path(s):
        if not os.path.exists(s):
            raise CostModelError("no such file", file=s)
        return _load_hw_path(os.path.abspath(s), os.path.getmtime(s))
    names = hardware_names(hardware_dir)
    if s not in names:
        raise CostModelError(f"unknown hardware {s!r}{suggest(s, names)} (see `costmodel hardware`)")
    f = names[s]
    return _load_hw_path(str(f), f.stat().st_mtime)
