"""The book as a regression suite.

Every computable figure of "Deep Learning and Transformers" (shared/book) is
an entry in costmodel/data/book/*.yaml with an ``expr`` that the engine
evaluates. ``expr`` is a small, safe Python-like expression (numbers,
arithmetic, the entry's ``inputs`` as names, and the functions of
``FUNCTIONS`` below, all thin wrappers over the engine, the op library and
the hardware specs). Verdicts:

* reproduced -- the engine gives the book's value within ``rel_tol``;
* erratum    -- the engine's value is ``engine_value`` (checked) and differs
                from the book's beyond ``rel_tol``; ``cause`` says why;
* measured   -- a claimed measurement, kept for GPU validation.
"""
from __future__ import annotations

import ast
import math
import operator
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field

from .errors import CostModelError

BOOK_DIR = Path(__file__).resolve().parent / "data" / "book"


# --- the function library available to expressions --------------------------
class _Values(dict):
    """Report values with attribute access: estimate(...).params."""
    __getattr__ = dict.__getitem__


def _estimate(model, hardware="a100-80gb", overrides=None, **kw):
    from .engine import estimate
    ov = dict(overrides or {})
    wl = {}
    for k, v in kw.items():
        if k.startswith(("model__", "hardware__")):
            a, b = k.split("__", 1)
            ov[f"{a}.{b.replace('__', '.')}"] = v
        else:
            wl[k] = v
    wl.setdefault("cuda_context_bytes", 0.0)
    wl.setdefault("allocator_slack", 0.0)
    return _cached_estimate(_freeze(model), hardware, _freeze(ov), _freeze(wl))


def _freeze(x):
    if isinstance(x, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    if isinstance(x, list):
        return tuple(_freeze(v) for v in x)
    return x


def _thaw(x):
    if isinstance(x, tuple) and all(isinstance(i, tuple) and len(i) == 2 and isinstance(i[0], str) for i in x) and x:
        return {k: _thaw(v) for k, v in x}
    if isinstance(x, tuple):
        return [_thaw(v) for v in x]
    return x


@lru_cache(maxsize=512)
def _cached_estimate(model, hardware, ov, wl):
    from .engine import estimate
    m = _thaw(model) if isinstance(model, tuple) else model
    if isinstance(m, dict):
        from .catalog import parse_model
        m = parse_model(m)
    rep = estimate(m, hardware, _thaw(wl) or {}, overrides=_thaw(ov) or {})
    v = _Values(rep.values)
    v["_report"] = rep
    return v


def select_ops(model, kind=None, name=None, hardware="a100-80gb", **kw):
    """The OpCosts of a model (one device, one micro-batch) whose kind is
    ``kind`` (a name or a list) and whose path contains one of ``name``."""
    rep = _estimate(model, hardware, **kw)["_report"]
    kinds = (kind,) if isinstance(kind, str) else kind
    names = (name,) if isinstance(name, str) else name
    return [c for c in rep.ops
            if (not kinds or c.op.kind in kinds) and (not names or any(n in c.path for n in names))]


def _ops_sum(model, field="fwd_flops", kind=None, name=None, hardware="a100-80gb", **kw):
    """Sum ``field`` (an Op attribute, or fwd_time/bwd_time) over the selected
    ops of a model (see select_ops); repeats counted."""
    return sum(c.count * (getattr(c, field) if field in ("fwd_time", "bwd_time") else getattr(c.op, field))
               for c in select_ops(model, kind, name, hardware, **kw))


def _op(kind, precision="fp32", **dims):
    from .ops import Precision, make
    return make(kind, kind, Precision.of(precision), **dims)


def _op_time(kind, hardware="a100-80gb", precision="fp32", backward=False, **dims):
    from .catalog import load_hardware
    from .engine import efficiency, memory_efficiency, op_peak, roofline
    from .ops import Precision
    hw = load_hardware(hardware)
    p = Precision.of(precision)
    o = _op(kind, precision, **dims)
    f, b = (o.bwd_flops, o.bwd_bytes) if backward else (o.fwd_flops, o.fwd_bytes)
    return roofline(f, b, op_peak(hw, p, o.op_class), efficiency(hw, o.op_class, f), hw.memory.bandwidth,
                    memory_efficiency(hw))[0]


def _hw(name):
    from .catalog import load_hardware
    return load_hardware(name)


def _peak(name, dtype="bf16"):
    v = _hw(name).peak_flops(dtype)
    if v is None:
        raise CostModelError(f"{name} has no {dtype} peak")
    return v


def _roofline_time(flops, nbytes, peak, bandwidth):
    """max(FLOPs / peak, bytes / bandwidth) (Williams et al. 2009)."""
    return max(flops / peak, nbytes / bandwidth)


def _attainable(intensity, peak, bandwidth):
    """Roofline ceiling: min(peak, intensity * bandwidth)."""
    return min(peak, intensity * bandwidth)


def _six_nd(n, d):
    """Training FLOPs ~ 6 N D (Kaplan et al. 2020, sec. 2.1)."""
    return 6.0 * n * d


def _train_time(flops, peak, utilization=1.0, devices=1):
    return flops / (peak * utilization * devices)


def _kv_cache(layers, batch, kv_heads, d_head, context, bytes_per=2):
    """2 * layers * batch * kv_heads * d_head * context * bytes (memory.kv_cache_bytes)."""
    from .memory import kv_cache_bytes
    return kv_cache_bytes(layers, batch, kv_heads, d_head, context, bytes_per)


def _korthikanti(s, b, h, a, layers=1, t=1, mode="none", sp=False):
    """Activation bytes per layer at 16-bit (Korthikanti et al. 2022, Table 2):
    none: sbh(34 + 5as/h); TP: sbh(10 + 24/t + 5as/(ht)); SP: sbh(34/t + 5as/(ht));
    selective: drop the 5as/h term; full: 2sbh."""
    if mode == "full":
        per = 2 * s * b * h
    elif sp:
        per = s * b * h * (34 / t + (0 if mode == "selective" else 5 * a * s / (h * t)))
    else:
        per = s * b * h * (10 + 24 / t + (0 if mode == "selective" else 5 * a * s / (h * t)))
    return per * layers


def _optimizer_bytes(params, optimizer="adamw", state_bytes=4):
    from .memory import optimizer_state_bytes_per_param
    return params * optimizer_state_bytes_per_param(optimizer, state_bytes)


def _model_state_bytes(params, precision="bf16", optimizer="adamw", zero=0, dp=1, master_weights=True,
                       fp32_grads=False):
    """weights + grads + master + optimizer states per device under ZeRO
    (Rajbhandari et al. 2020, sec. 5.1): the engine's memory.model_state_bytes."""
    return sum(_state_parts(params, precision, optimizer, zero, dp, master_weights, fp32_grads).values())


def _state_parts(params, precision, optimizer, zero, dp, master_weights, fp32_grads) -> dict:
    from .memory import model_state_bytes, optimizer_state_bytes_per_param, state_dtypes
    d = state_dtypes(precision, master_weights, fp32_grads)
    return model_state_bytes(params, d, optimizer_state_bytes_per_param(optimizer, d["state"]), zero, dp)


def _allreduce(nbytes, n, bandwidth):
    from .comm import allreduce_time
    return allreduce_time(nbytes, n, bandwidth)


def _allgather(nbytes, n, bandwidth):
    from .comm import allgather_time
    return allgather_time(nbytes, n, bandwidth)


def _bubble(p, m, v=1):
    """Pipeline bubble fraction (p-1)/(v*m) of the ideal time (Narayanan et al. 2021)."""
    return (p - 1) / (v * m)


def _conv_out(size, kernel, stride=1, padding=0, dilation=1):
    from .ops import conv_out
    return conv_out(size, kernel, stride, padding, dilation)


def _params(model, **overrides):
    from .catalog import load_model, parse_model
    from .engine import _apply_overrides, count_params
    spec = parse_model(model) if isinstance(model, dict) else load_model(model)
    if overrides:
        spec = _apply_overrides(spec, {k.replace("__", "."): v for k, v in overrides.items()}, "model.")
    return count_params(spec)


def _mfu(flops_per_s, peak):
    return flops_per_s / peak


FUNCTIONS = {
    # whole-model engine
    "estimate": _estimate, "ops_sum": _ops_sum, "params": _params,
    # op library and hardware
    "op": _op, "op_time": _op_time, "hw": _hw, "peak": _peak,
    "bandwidth": lambda name: _hw(name).memory.bandwidth,
    "capacity": lambda name: _hw(name).memory.capacity_bytes,
    "ridge": lambda name, dtype="bf16": _hw(name).ridge_point(dtype),
    "roofline_time": _roofline_time, "attainable": _attainable,
    # closed forms (each cites its source in its docstring)
    "six_nd": _six_nd, "train_time": _train_time, "kv_cache": _kv_cache, "korthikanti": _korthikanti,
    "optimizer_bytes": _optimizer_bytes, "model_state_bytes": _model_state_bytes,
    "allreduce_time": _allreduce, "allgather_time": _allgather, "bubble": _bubble, "conv_out": _conv_out,
    "mfu": _mfu,
    # math
    "sqrt": math.sqrt, "log2": math.log2, "log": math.log, "log10": math.log10, "ceil": math.ceil,
    "floor": math.floor, "min": min, "max": max, "abs": abs, "sum": sum, "round": round,
}


def _load_extra_functions():
    import importlib
    import pkgutil
    from . import bookfuncs
    for m in pkgutil.iter_modules(bookfuncs.__path__):
        mod = importlib.import_module(f"{bookfuncs.__name__}.{m.name}")
        for k, fn in getattr(mod, "FUNCTIONS", {}).items():
            if k in FUNCTIONS and FUNCTIONS[k] is not fn:
                raise RuntimeError(f"book function {k!r} defined twice ({m.name})")
            FUNCTIONS[k] = fn


_load_extra_functions()

CONSTANTS = {"GB": 1e9, "GiB": 2.0 ** 30, "MB": 1e6, "MiB": 2.0 ** 20, "KB": 1e3, "KiB": 1024.0, "TB": 1e12,
             "TiB": 2.0 ** 40, "TFLOP": 1e12, "GFLOP": 1e9, "PFLOP": 1e15, "hour": 3600.0, "day": 86400.0,
             "pi": math.pi, "e": math.e, "True": True, "False": False, "None": None}

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.Mod: operator.mod}
_UN = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}


def evaluate(expr: str, names: dict | None = None) -> Any:
    """Evaluate a catalogue expression safely (no attribute access to dunders,
    no imports, only FUNCTIONS / CONSTANTS / the entry's inputs)."""
    env = dict(CONSTANTS)
    env.update(names or {})
    tree = ast.parse(str(expr), mode="eval")
    return _ev(tree.body, env)


def _ev(n, env):
    if isinstance(n, ast.Constant):
        return n.value
    if isinstance(n, ast.Name):
        if n.id in env:
            return env[n.id]
        if n.id in FUNCTIONS:
            return FUNCTIONS[n.id]
        raise CostModelError(f"unknown name {n.id!r} in expression")
    if isinstance(n, ast.BinOp) and type(n.op) in _BIN:
        a, b = _ev(n.left, env), _ev(n.right, env)
        if isinstance(n.op, ast.Pow) and abs(b) > 64:
            raise CostModelError("exponent too large")
        return _BIN[type(n.op)](a, b)
    if isinstance(n, ast.UnaryOp) and type(n.op) in _UN:
        return _UN[type(n.op)](_ev(n.operand, env))
    if isinstance(n, ast.Compare) and len(n.ops) == 1 and type(n.ops[0]) in _CMP:
        return _CMP[type(n.ops[0])](_ev(n.left, env), _ev(n.comparators[0], env))
    if isinstance(n, ast.IfExp):
        return _ev(n.body, env) if _ev(n.test, env) else _ev(n.orelse, env)
    if isinstance(n, (ast.List, ast.Tuple)):
        return [_ev(e, env) for e in n.elts]
    if isinstance(n, ast.Dict):
        return {_ev(k, env): _ev(v, env) for k, v in zip(n.keys, n.values)}
    if isinstance(n, ast.Attribute):
        if n.attr.startswith("_"):
            raise CostModelError(f"attribute {n.attr!r} not allowed")
        obj = _ev(n.value, env)
        if isinstance(obj, dict):
            return obj[n.attr]
        return getattr(obj, n.attr)
    if isinstance(n, ast.Subscript):
        return _ev(n.value, env)[_ev(n.slice, env)]
    if isinstance(n, ast.Call):
        if not isinstance(n.func, (ast.Name, ast.Attribute)):
            raise CostModelError("only named function calls are allowed")
        if isinstance(n.func, ast.Name):
            if n.func.id not in FUNCTIONS:
                raise CostModelError(f"unknown function {n.func.id!r}")
            fn = FUNCTIONS[n.func.id]
        else:
            if n.func.attr.startswith("_"):
                raise CostModelError(f"method {n.func.attr!r} not allowed")
            obj = _ev(n.func.value, env)
            if n.func.attr not in ("peak_flops", "vector_flops", "ridge_point", "get"):
                raise CostModelError(f"method {n.func.attr!r} not allowed")
            fn = getattr(obj, n.func.attr)
        args = [_ev(a, env) for a in n.args]
        kw = {k.arg: _ev(k.value, env) for k in n.keywords}
        return fn(*args, **kw)
    raise CostModelError(f"expression element {type(n).__name__} not allowed")


# --- the catalogue ------------------------------------------------------------
class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    id: str
    line: int
    section: str = ""
    quote: str = ""
    quantity: str
    category: str = ""
    book_value: Optional[float] = None
    unit: str = ""
    inputs: dict = Field(default_factory=dict)
    scenario: str = ""
    expr: Optional[str] = None
    rel_tol: float = Field(0.01, ge=0)
    verdict: str = Field(pattern="^(reproduced|erratum|measured)$")
    engine_value: Optional[float] = None
    cause: Optional[str] = None
    note: Optional[str] = None

    @property
    def chapter(self) -> int:
        try:
            return int(self.section.split(".")[0])
        except ValueError:
            return 0


@dataclass
class Result:
    entry: Entry
    value: Optional[float]
    ok: bool
    message: str


@lru_cache(maxsize=1)
def load_catalogue(directory: str | None = None) -> tuple[Entry, ...]:
    d = Path(directory) if directory else BOOK_DIR
    out = []
    seen = set()
    for f in sorted(d.glob("*.yaml")):
        data = yaml.safe_load(f.read_text(encoding="utf-8")) or []
        for raw in data:
            e = Entry.model_validate(raw)
            if e.id in seen:
                raise CostModelError(f"duplicate book entry id {e.id}", file=str(f))
            seen.add(e.id)
            out.append(e)
    out.sort(key=lambda e: (e.line, e.id))
    return tuple(out)


def compute(e: Entry) -> Optional[float]:
    if not e.expr:
        return None
    v = evaluate(e.expr, e.inputs)
    return float(v)


def _close(a: float, b: float, rel: float) -> bool:
    if b == 0:
        return abs(a) <= rel if rel else a == 0
    return abs(a - b) <= rel * abs(b) + 1e-12 * abs(b)


ENGINE_TOL = 1e-6   # an erratum's recorded engine value must not drift


def check(e: Entry) -> Result:
    if e.verdict == "measured":
        v = compute(e) if e.expr else None
        return Result(e, v, True, "measured claim (GPU validation list)")
    try:
        v = compute(e)
    except CostModelError as err:
        return Result(e, None, False, f"cannot compute: {err.render()}")
    if v is None:
        return Result(e, None, False, "no expression")
    if e.verdict == "reproduced":
        ok = _close(v, e.book_value, e.rel_tol)
        return Result(e, v, ok, "reproduced" if ok else
                      f"drifted: engine {v:.6g} vs book {e.book_value:.6g} (rel_tol {e.rel_tol})")
    # erratum
    if e.engine_value is None:
        return Result(e, v, False, "erratum without engine_value")
    same = _close(v, e.engine_value, ENGINE_TOL)
    differs = not _close(v, e.book_value, e.rel_tol)
    if same and differs:
        return Result(e, v, True, "erratum")
    if not same:
        return Result(e, v, False, f"engine value changed: {v:.8g} vs recorded {e.engine_value:.8g}")
    return Result(e, v, False, f"erratum now matches the book ({v:.6g}); re-classify")


def scorecard(entries) -> list[dict]:
    rows: dict[int, dict] = {}
    for e in entries:
        r = rows.setdefault(e.chapter, {"chapter": e.chapter, "reproduced": 0, "erratum": 0, "measured": 0})
        r[e.verdict] += 1
    return [rows[k] for k in sorted(rows)]


def explain_entry(e: Entry) -> list[tuple[str, str]]:
    """Step-by-step working of one entry for `costmodel book --check`."""
    steps = [("figure", f"{e.quantity} (book line {e.line}, section {e.section})"),
             ("book says", f"{e.book_value:.6g} {e.unit}" if e.book_value is not None else "-"),
             ("quote", e.quote or "-"), ("scenario", e.scenario or "-"),
             ("inputs", ", ".join(f"{k}={v}" for k, v in e.inputs.items()) or "-"),
             ("expression", e.expr or "-")]
    if e.expr:
        try:
            tree = ast.parse(e.expr, mode="eval").body
            for sub in _subcalls(tree):
                src = ast.unparse(sub)
                val = _ev(sub, {**CONSTANTS, **e.inputs})
                if isinstance(val, (int, float)):
                    steps.append(("  = " + src, f"{val:.6g}"))
        except Exception as err:  # explanation is best effort; the value below is authoritative
            steps.append(("  (step)", f"could not expand: {err}"))
    r = check(e)
    steps.append(("engine value", f"{r.value:.6g} {e.unit}" if r.value is not None else "-"))
    steps.append(("verdict", e.verdict + (f": {e.cause}" if e.cause else "")))
    steps.append(("check", ("OK " if r.ok else "FAIL ") + r.message))
    return steps


def _subcalls(tree):
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and n is not tree:
            out.append(n)
    return out[:8]
