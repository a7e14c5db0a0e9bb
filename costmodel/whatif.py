"""What-if files: one scenario, changed and swept, one row per case.

A what-if YAML has four parts::

    description: GPT-3 6.7B on 300B tokens, three devices      # optional
    model: gpt3-6.7b            # base scenario: a name, a YAML / config.json path
    hardware: a100-80gb         #   (relative to this file) or an inline mapping
    workload: {batch: 512, seq: 2048, gpus: 64, tp: 8, tokens: 300e9}

    overrides:                  # any spec field, dotted
      hardware.memory.bandwidth: 1.5e12
      model.layers: 48

    sweep:                      # grid: every combination, first key slowest
      hardware: [a100-80gb, h100-sxm, tpu-v4]
      batch: [256, 512]
    zip:                        # zip: i-th values together (equal lengths),
      seq: [1024, 2048]         #   one more axis of the grid
      micro_batch: [4, 2]

    columns: [hardware, batch, step_time_s, mfu, train_time_s, cost_usd]
    sort: cost_usd              # '-COL' sorts descending
    where: ["fits=true", "step_time_s<10"]
    limit: 20                   # show at most this many rows (after sort)

Sweep and override keys: ``model``, ``hardware``, ``model.<field path>``,
``hardware.<field path>``, or a workload field (``batch`` or ``workload.batch``,
see costmodel/workload.py). Columns: any report value (``costmodel estimate
--format json`` lists them), a resolved workload field (``micro_batch``,
``grad_accum``, ``precision``...), a swept key, ``model``, ``hardware``,
``error``, a dotted path into a nested value (``comm.data_parallel.time_s``), or
an op group ``QUANTITY:GLOB`` summed over the ops whose path matches the glob
(``flops:*attn.scores|*attn.values``, ``time:*/fc*``; quantities: flops, time,
bytes, params, saved_bytes, share, count; per device and micro-batch, forward
+ backward when training).

Cases whose combination is impossible (tp does not divide the heads, a
sequence longer than the position table...) keep their row with the reason in
``error``; mistakes in the file itself stop with ``FILE:LINE: field: message``.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import CostModelError, suggest
from .workload import Workload
from .yamlio import Located, load_file

MAX_CASES = 2_000_000
SCHEMA_VERSION = 1
_MISSING = object()


class PlotSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: Optional[str] = Field(None, description="swept key on the x axis (default: the first swept key)")
    y: Optional[list[str]] = Field(None, description="columns to plot, one panel each "
                                                     "(default: step time, memory, cost when present)")


class WhatIfFile(BaseModel):
    """Schema of a what-if YAML file."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    description: str = ""
    model: Optional[Union[str, dict[str, Any]]] = Field(None, description="name, YAML or config.json path "
                                                                          "(relative to this file), or inline spec")
    hardware: Optional[Union[str, dict[str, Any]]] = Field(None, description="name, YAML path or inline spec "
                                                                             "[a100-80gb]")
    workload: dict[str, Any] = Field(default_factory=dict, description="workload fields (costmodel/workload.py)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted spec paths: model.layers, "
                                                                        "hardware.memory.bandwidth, or workload fields")
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="grid: every combination of these values")
    zip: dict[str, list[Any]] = Field(default_factory=dict, description="zipped lists (equal lengths): one more "
                                                                        "grid axis")
    columns: Optional[list[str]] = Field(None, description="report value names to show")
    sort: Optional[str] = Field(None, description="column to sort by; '-COL' descending")
    where: Union[str, list[str]] = Field(default_factory=list, description="filters: 'fits=true', 'step_time_s<1'")
    limit: Optional[int] = Field(None, ge=1, description="show at most this many rows (after sorting)")
    plot: Optional[PlotSpec] = None


# --- keys ------------------------------------------------------------------------
WORKLOAD_FIELDS = tuple(Workload.model_fields)


def classify(key: str) -> tuple[str, str]:
    """('model' | 'hardware' | 'model.' | 'hardware.' | 'workload', rest)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"expected a field name (got {key!r})")
    if key in ("model", "hardware"):
        return key, ""
    if key.startswith("model."):
        return "model.", key[6:]
    if key.startswith("hardware."):
        return "hardware.", key[9:]
    f = key[9:] if key.startswith("workload.") else key
    if f in Workload.model_fields:
        return "workload", f
    names = list(WORKLOAD_FIELDS) + ["model", "hardware", "model.<field>", "hardware.<field>"]
    raise ValueError(f"unknown field {key!r}{suggest(f, names)} (expected model, hardware, model.<field path>, "
                     f"hardware.<field path> or a workload field: {', '.join(WORKLOAD_FIELDS)})")


# --- the parsed file -------------------------------------------------------------
@dataclass
class Axis:
    keys: list[str]
    choices: list[dict]              # one assignment {key: value} per position
    path: str                        # 'sweep.batch' or 'zip'


@dataclass
class WhatIf:
    file: str
    loc: Located
    doc: WhatIfFile
    model: Any                       # base model ref (str or dict)
    hardware: Any
    workload: dict
    model_over: dict
    hw_over: dict
    axes: list[Axis]
    columns: Optional[list[str]]
    sort: Optional[str]
    where: list[tuple[str, str, Any, str]]          # (column, op, value, source text)
    where_src: list[str]                              # 'where[0]' paths or '--where'
    models_dir: tuple = ()
    hardware_dir: tuple = ()

    @property
    def swept(self) -> list[str]:
        return [k for a in self.axes for k in a.keys]

    @property
    def n_cases(self) -> int:
        return math.prod(len(a.choices) for a in self.axes) if self.axes else 1


def _err(loc: Located, path: str, msg: str) -> CostModelError:
    return CostModelError(msg, file=loc.file, line=loc.line_of(path), field=path or None)


def _validate_doc(loc: Located) -> WhatIfFile:
    if not isinstance(loc.data, dict):
        raise CostModelError("expected a mapping (model, hardware, workload, overrides, sweep, zip, columns, ...)",
                             file=loc.file, line=1)
    try:
        return WhatIfFile.model_validate(loc.data)
    except ValidationError as e:
        err = e.errors()[0]
        parts = [str(p) for p in err["loc"] if p not in ("str", "dict[str,any]", "list[str]")]
        path = ".".join(parts)
        if err["type"] == "extra_forbidden":
            top = list(WhatIfFile.model_fields) if len(parts) == 1 else list(PlotSpec.model_fields)
            raise _err(loc, path, "unknown field" + (suggest(parts[-1], top)
                                                     or f" (expected one of: {', '.join(top)})")) from None
        msg = err["msg"]
        if err["type"].startswith("list_") or err["type"] == "list_type":
            msg = "expected a list of values, e.g. [8, 16, 32]"
        elif err["type"] == "too_short":
            msg = "expected at least one value"
        inp = err.get("input")
        if not isinstance(inp, (dict, list)) and err["type"] not in ("missing",):
            msg += f" (got {inp!r})"
        raise _err(loc, path, msg) from None


_WHERE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$")


def parse_value(text: str) -> Any:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    low = t.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null", ""):
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        v = float(t)
        if math.isfinite(v):
            return v
    except ValueError:
        pass
    return t


def parse_where(text: str) -> tuple[str, str, Any, str]:
    m = _WHERE.match(text or "")
    if not m:
        raise ValueError(f"cannot parse filter {text!r} (expected COLUMN OP VALUE with OP one of "
                         f"= != < <= > >=, e.g. 'fits=true' or 'step_time_s<1')")
    col, op, val = m.groups()
    return col, ("==" if op == "=" else op), parse_value(val), text


def _ref(v, base_dir: str):
    """A model / hardware reference; relative paths are taken from the what-if file's folder."""
    if isinstance(v, str):
        from .catalog import _is_path
        if _is_path(v) and not os.path.isabs(v):
            cand = os.path.join(base_dir, v)
            if os.path.exists(cand):
                return cand
    return v


def load_whatif(path: str, *, cli_workload: dict | None = None, cli_overrides: dict | None = None,
                model=None, hardware=None, models_dir=(), hardware_dir=(), sort: str | None = None,
                filters=()) -> WhatIf:
    loc = load_file(path)
    return build_whatif(loc, cli_workload=cli_workload, cli_overrides=cli_overrides, model=model,
                        hardware=hardware, models_dir=models_dir, hardware_dir=hardware_dir, sort=sort,
                        filters=filters)


def from_dict(data: dict, file: str = "<what-if>", **kw) -> WhatIf:
    """A what-if scenario from a plain dict (used by `compare`)."""
    return build_whatif(Located(data, {}, file), **kw)


def build_whatif(loc: Located, *, cli_workload=None, cli_overrides=None, model=None, hardware=None,
                 models_dir=(), hardware_dir=(), sort=None, filters=()) -> WhatIf:
    doc = _validate_doc(loc)
    for part in (doc.workload, doc.overrides, doc.sweep, doc.zip):
        for k in list(part):
            if k not in ("model", "hardware"):
                part[k] = _num(part[k])
    base_dir = os.path.dirname(os.path.abspath(loc.file)) if os.path.exists(loc.file) else os.getcwd()
    wl: dict = {}
    m_over: dict = {}
    h_over: dict = {}
    base_model = model if model else _ref(doc.model, base_dir)
    base_hw = hardware if hardware else _ref(doc.hardware, base_dir)
    for k, v in doc.workload.items():
        if k not in Workload.model_fields:
            raise _err(loc, f"workload.{k}", "unknown workload field" + (suggest(k, WORKLOAD_FIELDS)
                       or f" (expected one of: {', '.join(WORKLOAD_FIELDS)})"))
        wl[k] = v

    def put(key, v, where):
        try:
            kind, rest = classify(key)
        except ValueError as e:
            raise _err(loc, where, str(e)) from None
        if kind == "workload":
            wl[rest] = v
        elif kind == "model.":
            m_over[rest] = v
        elif kind == "hardware.":
            h_over[rest] = v
        else:
            return kind
        return None

    for k, v in doc.overrides.items():
        kind = put(k, v, f"overrides.{k}")
        if kind == "model":
            base_model = _ref(v, base_dir) if not model else base_model
        elif kind == "hardware":
            base_hw = _ref(v, base_dir) if not hardware else base_hw
    # the command line wins over the file's base scenario
    for k, v in (cli_overrides or {}).items():
        try:
            kind, rest = classify(k)
        except ValueError as e:
            raise CostModelError(str(e), field="--set") from None
        {"workload": wl, "model.": m_over, "hardware.": h_over}.get(kind, {})[rest] = v
        if kind == "model":
            base_model = v
        elif kind == "hardware":
            base_hw = v
    wl.update(cli_workload or {})
    if base_model is None and "model" not in doc.sweep and "model" not in doc.zip:
        raise CostModelError("missing field 'model' (a built-in name, a YAML path or a config.json; or sweep it)",
                             file=loc.file, line=1, field="model")
    if base_hw is None:
        base_hw = "a100-80gb"

    # base workload: validate now, with line numbers
    try:
        Workload.model_validate(wl)
    except ValidationError as e:
        err = e.errors()[0]
        f = ".".join(str(x) for x in err["loc"])
        path = f"workload.{f}" if f"workload.{f}" in loc.lines else (f"overrides.{f}" if f"overrides.{f}" in loc.lines
                                                                    else f"workload.{f}")
        raise _err(loc, path, f"{err['msg']} (got {err.get('input')!r})") from None

    axes: list[Axis] = []
    seen: dict[str, str] = {}
    for k, vals in doc.sweep.items():
        _check_axis_key(loc, k, f"sweep.{k}", seen)
        if not vals:
            raise _err(loc, f"sweep.{k}", "expected at least one value")
        vals = [_ref(v, base_dir) for v in vals] if k in ("model", "hardware") else vals
        axes.append(Axis([k], [{k: v} for v in vals], f"sweep.{k}"))
    if doc.zip:
        lens = {k: len(v) for k, v in doc.zip.items()}
        for k, vals in doc.zip.items():
            _check_axis_key(loc, k, f"zip.{k}", seen)
            if not vals:
                raise _err(loc, f"zip.{k}", "expected at least one value")
        if len(set(lens.values())) > 1:
            k = next(k for k, n in lens.items() if n != next(iter(lens.values())))
            raise _err(loc, f"zip.{k}", "zipped lists differ in length ("
                       + ", ".join(f"{a}: {n}" for a, n in lens.items()) + "; expected equal lengths)")
        n = next(iter(lens.values()))
        keys = list(doc.zip)
        choices = []
        for i in range(n):
            choices.append({k: (_ref(doc.zip[k][i], base_dir) if k in ("model", "hardware") else doc.zip[k][i])
                            for k in keys})
        axes.append(Axis(keys, choices, "zip"))
    total = math.prod(len(a.choices) for a in axes) if axes else 1
    if total > MAX_CASES:
        raise CostModelError(f"the sweep has {total:,} cases (expected at most {MAX_CASES:,}; narrow the lists)",
                             file=loc.file, line=loc.line_of("sweep") or loc.line_of("zip"), field="sweep")

    where_src, where = [], []
    raw_where = [doc.where] if isinstance(doc.where, str) else list(doc.where)
    for i, w in enumerate(raw_where):
        src = f"where[{i}]" if isinstance(doc.where, list) else "where"
        try:
            where.append(parse_where(w))
        except ValueError as e:
            raise _err(loc, src, str(e)) from None
        where_src.append(src)
    for w in filters or ():
        try:
            where.append(parse_where(w))
        except ValueError as e:
            raise CostModelError(str(e), field="--where") from None
        where_src.append("--where")
    w = WhatIf(loc.file, loc, doc, base_model, base_hw, wl, m_over, h_over, axes, doc.columns,
               sort or doc.sort, where, where_src, tuple(models_dir or ()), tuple(hardware_dir or ()))
    _prevalidate(w)
    return w


_NUM = re.compile(r"[-+]?(\d[\d_]*\.?\d*|\.\d+)[eE][-+]?\d+")


def _num(v):
    """YAML 1.1 (PyYAML) reads 1e12 and 1.5e12 as text; read them as the numbers they are."""
    if isinstance(v, str) and _NUM.fullmatch(v.strip()):
        return float(v.strip().replace("_", ""))
    if isinstance(v, list):
        return [_num(x) for x in v]
    return v


def _check_axis_key(loc, k, path, seen):
    try:
        classify(k)
    except ValueError as e:
        raise _err(loc, path, str(e)) from None
    norm = k[9:] if k.startswith("workload.") else k
    if norm in seen:
        raise _err(loc, path, f"{k!r} is already swept in {seen[norm]} (expected each field in one place)")
    seen[norm] = path


# --- resolving specs (memoized: a sweep builds each distinct spec once) -----------
class _Resolver:
    def __init__(self, w: WhatIf):
        self.w = w
        self.models: dict = {}
        self.hws: dict = {}

    def _load_model(self, ref, path):
        from .catalog import load_model, parse_model
        if isinstance(ref, dict):
            return parse_model(ref, self.w.file)
        return load_model(ref, self.w.models_dir)

    def _load_hw(self, ref, path):
        from .catalog import load_hardware
        from .specs.hardware import Hardware
        if isinstance(ref, dict):
            try:
                return Hardware.model_validate(ref)
            except ValidationError as e:
                err = e.errors()[0]
                raise CostModelError(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}", file=self.w.file,
                                     line=self.w.loc.line_of(path), field=path) from None
        return load_hardware(ref, self.w.hardware_dir)

    def spec(self, ref, over: dict, key):
        return self._overridden(self.models, self._load_model, "model", ref, over, key)

    def hw(self, ref, over: dict, key):
        return self._overridden(self.hws, self._load_hw, "hardware", ref, over, key)

    @staticmethod
    def _overridden(cache: dict, load, kind: str, ref, over: dict, key):
        """The spec ``ref`` with ``over`` applied, loaded and validated once per (ref, key)."""
        k = (_key(ref), key)
        obj = cache.get(k)
        if obj is None:
            from .engine import _apply_overrides
            obj = cache[k] = _apply_overrides(load(ref, kind), over, f"{kind}.")
        return obj


def _key(ref):
    return ref if isinstance(ref, str) else json.dumps(ref, sort_keys=True, default=str)


def _prevalidate(w: WhatIf):
    """Check every swept value on its own against the base scenario, so that a
    typo stops with its line number instead of failing every case."""
    loc = w.loc
    res = _Resolver(w)
    models = [w.model] if w.model is not None else []
    hws = [w.hardware]
    for a in w.axes:
        for i, ch in enumerate(a.choices):
            for k, v in ch.items():
                p = f"{a.path}[{i}]" if a.path != "zip" else f"zip.{k}[{i}]"
                if k == "model":
                    try:
                        res.spec(v, {}, ())
                    except CostModelError as e:
                        raise _relocate(e, loc, p) from None
                    models.append(v)
                elif k == "hardware":
                    try:
                        res.hw(v, {}, ())
                    except CostModelError as e:
                        raise _relocate(e, loc, p) from None
                    hws.append(v)
    try:
        base_spec = res.spec(models[0], w.model_over, ("base",))
    except CostModelError as e:
        raise _relocate(e, loc, _over_path(loc, e.field) or ("model" if "model" in loc.lines else "")) from None
    try:
        res.hw(w.hardware, w.hw_over, ("base",))
    except CostModelError as e:
        raise _relocate(e, loc, _over_path(loc, e.field) or ("hardware" if "hardware" in loc.lines else "")) from None
    from .engine import _apply_overrides
    for a in w.axes:
        for i, ch in enumerate(a.choices):
            for k, v in ch.items():
                p = f"{a.path}[{i}]" if a.path != "zip" else f"zip.{k}[{i}]"
                kind, rest = classify(k)
                try:
                    if kind == "workload":
                        _validate_workload_value(rest, v)
                    elif kind == "model.":
                        _apply_overrides(base_spec, {rest: v}, "model.")
                    elif kind == "hardware.":
                        _apply_overrides(res.hw(w.hardware, w.hw_over, ("base",)), {rest: v}, "hardware.")
                except CostModelError as e:
                    raise _relocate(e, loc, p) from None


def _over_path(loc: Located, field: str | None) -> str | None:
    if not field:
        return None
    for p in (f"overrides.{field}",):
        if p in loc.lines:
            return p
    return None


def _relocate(e: CostModelError, loc: Located, path: str) -> CostModelError:
    if e.file and e.file != loc.file:     # an error inside a referenced spec file keeps its own location
        return e
    msg = e.message
    if e.field and e.field not in path:
        msg = f"{e.field}: {msg}"
    return CostModelError(msg, file=loc.file, line=loc.line_of(path) if path else None, field=path or None)


def _validate_workload_value(field_name: str, v):
    try:
        Workload.model_validate({field_name: v})
    except ValidationError as e:
        err = e.errors()[0]
        raise CostModelError(f"{err['msg']} (got {v!r})") from None


# --- evaluation ------------------------------------------------------------------
@dataclass
class Case:
    assign: dict
    report: Any = None                # the full Report (None for an impossible case, or when slimmed)
    error: Optional[str] = None
    row: dict = field(default_factory=dict)     # kept columns of a slimmed case

    @property
    def ok(self) -> bool:
        return self.error is None


def iter_assignments(w: WhatIf):
    if not w.axes:
        yield {}
        return
    for combo in itertools.product(*(a.choices for a in w.axes)):
        if len(combo) == 1:
            yield combo[0]
        else:
            d = {}
            for c in combo:
                d.update(c)
            yield d


def evaluate(w: WhatIf, progress: bool = False, keep=None) -> list[Case]:
    """Run every case of the sweep in-process (memoized trees and costs).

    ``keep``: column names; when given, each case keeps only those values
    (``Case.row``) instead of its whole Report, so that sweeps of millions of
    cases fit in memory. The first possible case keeps its Report (for
    column-name suggestions)."""
    keep = None if keep is None else list(dict.fromkeys(keep))
    kept_one = False
    from .engine import estimate_resolved
    res = _Resolver(w)
    cache: dict = {}
    kinds = {k: classify(k) for k in w.swept}
    base_wl = dict(w.workload)
    n = w.n_cases
    cases: list[Case] = []
    bar = _progress(n) if progress else None
    step = max(1, n // 200)
    try:
        for i, assign in enumerate(iter_assignments(w)):
            model_ref, hw_ref = w.model, w.hardware
            m_over, h_over = w.model_over, w.hw_over
            wl = base_wl
            mkey, hkey = (), ()
            for k, v in assign.items():
                kind, rest = kinds[k]
                if kind == "workload":
                    if wl is base_wl:
                        wl = dict(base_wl)
                    wl[rest] = v
                elif kind == "model":
                    model_ref = v
                elif kind == "hardware":
                    hw_ref = v
                elif kind == "model.":
                    if m_over is w.model_over:
                        m_over = dict(w.model_over)
                    m_over[rest] = v
                    mkey += ((k, _key(v)),)
                else:
                    if h_over is w.hw_over:
                        h_over = dict(w.hw_over)
                    h_over[rest] = v
                    hkey += ((k, _key(v)),)
            c = Case(assign)
            try:
                spec = res.spec(model_ref, m_over, mkey)
                hw = res.hw(hw_ref, h_over, hkey)
                try:
                    wlo = Workload.model_validate(wl)
                except ValidationError as e:
                    err = e.errors()[0]
                    raise CostModelError(f"{err['msg']} (got {err.get('input')!r})",
                                         field=".".join(str(x) for x in err["loc"])) from None
                c.report = estimate_resolved(spec, hw, wlo, cache=cache, explain=False)
                if keep is not None:
                    c.row = {k: v for k in keep if (v := lookup(c, k)) is not _MISSING}
                    c.row["__mode"] = c.report.workload.get("mode")
                    if kept_one:
                        c.report = None
                    kept_one = True
            except CostModelError as e:
                c.error = e.render()
            cases.append(c)
            if bar is not None and i % step == 0:
                bar[0].update(bar[1], completed=i + 1)
    finally:
        if bar is not None:
            bar[0].update(bar[1], completed=n)
            bar[0].stop()
    return cases


PROGRESS_MIN_CASES = 300


def _progress(n: int):
    if n < PROGRESS_MIN_CASES:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    con = Console(stderr=True)
    if not con.is_terminal:
        return None
    p = Progress(TextColumn("what-if"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=con,
                 transient=True)
    p.start()
    return p, p.add_task("cases", total=n)


# --- rows, columns, filters, sorting ----------------------------------------------
def lookup(case: Case, col: str):
    """Value of a column for a case, or _MISSING."""
    if col == "error":
        return case.error
    if col in case.row:
        return case.row[col]
    rep = case.report
    if rep is None and case.ok:       # slimmed: only the kept columns (and the assignment) remain
        return case.assign.get(col, _MISSING)
    if col in case.assign and not (rep is not None and col in ("model", "hardware")):
        return case.assign[col]
    if rep is None:
        if col in case.assign:
            return case.assign[col]
        return _MISSING
    if col == "model":
        return rep.model
    if col == "hardware":
        return rep.hardware
    v = rep.values
    if col in v:
        return v[col]
    if col in rep.workload:
        return rep.workload[col]
    if col.startswith("workload.") and col[9:] in rep.workload:
        return rep.workload[col[9:]]
    if ":" in col:
        q, _, pat = col.partition(":")
        if q in OP_QUANTITIES and pat:
            return op_group(rep, q, pat)
    if "." in col:
        head, *rest = col.split(".")
        cur = v.get(head, _MISSING)
        for r in rest:
            if isinstance(cur, dict) and r in cur:
                cur = cur[r]
            else:
                return _MISSING
        return cur
    return _MISSING


OP_QUANTITIES = ("flops", "time", "bytes", "params", "saved_bytes", "share", "count")


def op_group(rep, quantity: str, pattern: str):
    """Sum of a quantity over the ops whose path (without the model name)
    matches a glob; alternatives separated by '|': ``time:*attn.scores|*attn.values``.
    Per device and micro-batch, forward + backward when training (as the
    breakdown table of `estimate`); ``share``: fraction of that time;
    ``count``: how many ops matched (with repeats)."""
    from fnmatch import fnmatchcase
    pats = [p.strip() for p in pattern.split("|") if p.strip()]
    train = rep.workload.get("mode") == "train"
    pre = rep.model + "/"
    tot = 0.0
    all_t = 0.0
    n = 0
    for c in rep.ops:
        o = c.op
        t = c.fwd_time + (c.bwd_time if train else 0.0)
        all_t += c.count * t
        path = c.path[len(pre):] if c.path.startswith(pre) else c.path
        if not any(fnmatchcase(path, p) for p in pats):
            continue
        n += c.count
        if quantity == "flops":
            tot += c.count * (o.fwd_flops + (o.bwd_flops if train else 0.0))
        elif quantity in ("time", "share"):
            tot += c.count * t
        elif quantity == "bytes":
            tot += c.count * (o.fwd_bytes + (o.bwd_bytes if train else 0.0))
        elif quantity == "params":
            tot += c.count * o.params
        elif quantity == "saved_bytes":
            tot += c.count * o.saved_bytes
    if quantity == "count":
        return n
    if quantity == "share":
        return tot / all_t if all_t else 0.0
    return tot


def _known_columns(cases: list[Case], w: WhatIf) -> list[str]:
    names: dict[str, None] = {"model": None, "hardware": None, "error": None}
    for k in w.swept:
        names[k] = None
    for c in cases:
        if c.report is not None:
            names.update(dict.fromkeys(c.report.values))
            names.update(dict.fromkeys(c.report.workload))
            break
    for c in cases[:1000]:
        names.update(dict.fromkeys(k for k in c.row if not k.startswith("__")))
    return list(names)


def _mode(c: Case):
    return c.report.workload.get("mode") if c.report is not None else c.row.get("__mode")


def _has(c: Case, col: str) -> bool:
    return lookup(c, col) is not _MISSING


def default_columns(cases: list[Case], w: WhatIf) -> list[str]:
    cols = list(w.swept)
    oks = [c for c in cases if c.ok]
    train = not oks or any(_mode(c) == "train" for c in oks)
    if train:
        extra = ["params", "step_time_s", "total_memory_bytes", "fits", "mfu"]
        extra.append("tokens_per_s" if any(_has(c, "tokens_per_s") for c in oks) else "samples_per_s")
        if any(lookup(c, "train_time_s") not in (_MISSING, None) for c in oks):
            extra += ["train_time_s", "cost_usd"]
    else:
        extra = ["params", "forward_time_s", "decode_time_per_token_s", "kv_cache_bytes", "total_memory_bytes",
                 "fits", "tokens_per_s"]
        extra = [e for e in extra if any(_has(c, e) for c in oks)]
    for e in extra:
        if e not in cols:
            cols.append(e)
    if any(c.error for c in cases):
        cols.append("error")
    return cols


def _check_columns(cols: list[str], cases: list[Case], w: WhatIf, where: str, paths=None):
    ok_cases = [c for c in cases if c.ok]
    if not ok_cases:
        return
    known = _known_columns(cases, w)
    for i, col in enumerate(cols):
        q, _, pat = col.partition(":")
        if pat and q in OP_QUANTITIES:
            if not any(lookup(c, f"count:{pat}") for c in ok_cases):
                rep = next((c.report for c in ok_cases if c.report is not None), None)
                names = [o.path[len(rep.model) + 1:] for o in rep.ops[:200]] if rep else ["?"]
                msg = (f"op pattern {pat!r} matches no op (paths look like: {', '.join(names[:4])}, ...; "
                       f"globs: * and ?, alternatives with |)")
                p = paths[i] if paths else None
                if p and p not in ("--where", "--sort"):
                    raise _err(w.loc, p, msg)
                raise CostModelError(msg, field=p or where)
            continue
        if any(lookup(c, col) is not _MISSING for c in ok_cases[:50]) or \
                any(lookup(c, col) is not _MISSING for c in ok_cases):
            continue
        msg = f"unknown column {col!r}{suggest(col, known)} (see `costmodel estimate MODEL --format json` for names)"
        p = paths[i] if paths else None
        if p and p != "--where" and p != "--sort":
            raise _err(w.loc, p, msg)
        raise CostModelError(msg, field=p or where)


_OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _match(v, op, want) -> bool:
    if v is _MISSING or v is None:
        return op == "==" and want is None or op == "!=" and want is not None
    if isinstance(v, bool) or isinstance(want, bool):
        if op not in ("==", "!="):
            return False
        if isinstance(want, str):
            want = want.lower() in ("true", "yes", "1")
        return _OPS[op](bool(v), bool(want))
    if isinstance(v, (int, float)) and isinstance(want, (int, float)):
        return _OPS[op](v, want)
    if op in ("==", "!="):
        return _OPS[op](str(v), str(want))
    try:
        return _OPS[op](float(v), float(want))
    except (TypeError, ValueError):
        return _OPS[op](str(v), str(want))


def _sort_key(v):
    if v is _MISSING or v is None:
        return (2, 0, "")
    if isinstance(v, bool):
        return (0, int(v), "")
    if isinstance(v, (int, float)):
        return (0, v if math.isfinite(v) else math.inf, "")
    return (1, 0, str(v))


@dataclass
class Table:
    columns: list[str]
    rows: list[list]                  # raw values (None where missing)
    n_cases: int
    n_errors: int
    title: str
    notes: list[str]


def tabulate(w: WhatIf, cases: list[Case], columns: list[str] | None = None) -> Table:
    cols = list(columns or w.columns or default_columns(cases, w))
    paths = None
    if columns is None and w.columns:
        paths = [f"columns[{i}]" for i in range(len(cols))]
    _check_columns(cols, cases, w, "columns", paths)
    _check_columns([c for c, *_ in w.where], cases, w, "--where", w.where_src)
    kept = [c for c in cases if all(_match(lookup(c, col), op, want) for col, op, want, _ in w.where)]
    notes = []
    if w.sort:
        desc = w.sort.startswith("-")
        col = w.sort[1:] if desc else w.sort
        _check_columns([col], cases, w, "--sort", ["sort" if w.doc.sort and w.sort == w.doc.sort else "--sort"])
        present = [c for c in kept if lookup(c, col) not in (_MISSING, None)]
        absent = [c for c in kept if lookup(c, col) in (_MISSING, None)]
        present.sort(key=lambda c: _sort_key(lookup(c, col)), reverse=desc)
        kept = present + absent
        notes.append(f"sorted by {col}{' (descending)' if desc else ''}")
    if w.where:
        notes.append("where " + " and ".join(t for *_, t in w.where))
    shown = kept[: w.doc.limit] if w.doc.limit else kept
    rows = []
    for c in shown:
        r = []
        for col in cols:
            v = lookup(c, col)
            r.append(None if v is _MISSING else v)
        rows.append(r)
    n_err = sum(1 for c in cases if c.error)
    return Table(cols, rows, len(cases), n_err, _title(w), notes + ([f"showing {len(shown)} of {len(kept)}"]
                                                                    if len(shown) < len(kept) else []))


def _title(w: WhatIf) -> str:
    if w.doc.description:
        return w.doc.description
    m = w.model if isinstance(w.model, str) else (w.model or {}).get("name", "inline model") if w.model else "models"
    h = w.hardware if isinstance(w.hardware, str) else (w.hardware or {}).get("name", "inline hardware")
    return f"what-if: {os.path.basename(str(m))} on {os.path.basename(str(h))}"


# --- formatting ------------------------------------------------------------------
def fmt_cell(col: str, v) -> str:
    from .units import fmt_bytes, fmt_flops, fmt_params, fmt_time, si
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict):
        return json.dumps(v, default=str)[:60]
    if not isinstance(v, (int, float)):
        return str(v)
    name = col.split(":", 1)[0] if ":" in col else col.rsplit(".", 1)[-1]
    if name == "time":
        name = "time_s"
    if name == "share":
        name = "mfu"            # a fraction, shown as a percentage
    if not math.isfinite(v):
        return str(v)
    if name in ("mfu", "hfu"):
        return f"{v:.1%}"
    if name.endswith("bytes") or name.endswith("_bytes_per_micro_batch"):
        return fmt_bytes(v)
    if name.endswith("_s") and not name.endswith("per_s"):
        return fmt_time(v)
    if name.endswith("per_s"):
        unit = "tok/s" if name.startswith("tokens") or "tokens" in name else "/s"
        return si(v, unit)
    if "flops" in name:
        return fmt_flops(v)
    if name == "params":
        return fmt_params(v).replace(" params", "")
    if name == "cost_usd" or name.endswith("_usd"):
        return f"${v:,.0f}" if abs(v) >= 100 else f"${v:,.2f}"
    if name.endswith("_kwh"):
        return f"{v:,.0f} kWh" if abs(v) >= 10 else f"{v:.3g} kWh"
    if name == "bandwidth":
        return si(v, "B/s")
    if "intensity" in name:
        return f"{v:.1f} FLOP/B"
    if name in ("device_hours",):
        return f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    return f"{v:.4g}"


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def render(t: Table, fmt: str, file: str = "", width: int | None = None) -> str:
    if fmt == "json":
        d = {"schema_version": SCHEMA_VERSION, "file": file, "title": t.title, "cases": t.n_cases,
             "errors": t.n_errors, "shown": len(t.rows), "notes": t.notes, "columns": t.columns,
             "rows": [{c: _jsonable(v) for c, v in zip(t.columns, r)} for r in t.rows]}
        return json.dumps(d, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(t.columns)
        for r in t.rows:
            wr.writerow(["" if v is None else ("true" if v is True else "false" if v is False else
                         (json.dumps(v) if isinstance(v, dict) else (repr(v) if isinstance(v, float) else v)))
                         for v in r])
        return buf.getvalue()
    if fmt == "markdown":
        lines = [f"**{t.title}** ({_summary(t)})", "", "| " + " | ".join(t.columns) + " |",
                 "|" + "|".join("---:" if _numeric(t, i) else "---" for i in range(len(t.columns))) + "|"]
        for r in t.rows:
            lines.append("| " + " | ".join(fmt_cell(c, v).replace("|", "\\|") for c, v in zip(t.columns, r)) + " |")
        return "\n".join(lines) + "\n"
    from rich.console import Console
    from rich.table import Table as RTable
    rt = RTable(title=t.title, title_justify="left", caption=_summary(t), caption_justify="left")
    for i, c in enumerate(t.columns):
        rt.add_column(c, justify="right" if _numeric(t, i) else "left", overflow="fold",
                      no_wrap=c not in ("error",))
    for r in t.rows:
        rt.add_row(*[fmt_cell(c, v) for c, v in zip(t.columns, r)])
    if width is None:
        import shutil
        width = max(100, shutil.get_terminal_size((160, 24)).columns)
    con = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    con.print(rt)
    return "\n".join(line.rstrip() for line in con.export_text().splitlines()) + "\n"


def _numeric(t: Table, i: int) -> bool:
    vals = [r[i] for r in t.rows if r[i] is not None]
    return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)


def _summary(t: Table) -> str:
    s = f"{t.n_cases} case{'s' if t.n_cases != 1 else ''}, {len(t.rows)} shown"
    if t.n_errors:
        s += f", {t.n_errors} impossible (see error column)"
    if t.notes:
        s += "; " + "; ".join(t.notes)
    return s


def run_whatif(path: str, fmt: str = "table", cli_workload: dict | None = None, cli_overrides: dict | None = None,
               model=None, hardware=None, models_dir=(), hardware_dir=(), sort: str | None = None, filters=(),
               progress: bool = False) -> str:
    """`costmodel estimate -f FILE`: evaluate the file, return the rendered table."""
    w = load_whatif(path, cli_workload=cli_workload, cli_overrides=cli_overrides, model=model, hardware=hardware,
                    models_dir=models_dir, hardware_dir=hardware_dir, sort=sort, filters=filters)
    cases = evaluate(w, progress=progress, keep=needed_columns(w))
    t = tabulate(w, cases)
    return render(t, fmt or "table", file=path)


DEFAULT_CANDIDATES = ("params", "step_time_s", "total_memory_bytes", "fits", "mfu", "tokens_per_s", "samples_per_s",
                      "train_time_s", "cost_usd", "forward_time_s", "decode_time_per_token_s", "kv_cache_bytes")


def needed_columns(w: WhatIf, extra=()) -> list[str]:
    """Every column the table, filters and sort of ``w`` can read."""
    cols = list(w.columns) if w.columns else list(w.swept) + list(DEFAULT_CANDIDATES)
    cols += [c for c, *_ in w.where] + list(extra)
    if w.sort:
        cols.append(w.sort.lstrip("-"))
    for c in list(cols):
        q, _, pat = c.partition(":")
        if pat and q in OP_QUANTITIES:
            cols.append(f"count:{pat}")
    return list(dict.fromkeys(cols))
