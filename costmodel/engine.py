"""The roofline engine: a model spec + workload + hardware -> a cost report.

Per op (Williams et al. 2009, roofline; book 1.2.5, 7.6.2):
    time = max(FLOPs / (peak of the op's dtype and unit * efficiency),
               bytes / (HBM bandwidth * memory efficiency))
    arithmetic intensity = FLOPs / bytes; bound = compute if the FLOP term wins.
Training step (per device; Narayanan et al. 2021):
    step = accum * (forward + backward + recompute of the slowest pipeline stage)
           + optimizer + exposed communication + pipeline bubble
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import comm as commmod
from .build import Shape, build
from .catalog import load_hardware, load_model
from .errors import CostModelError, suggest
from .memory import (backward_bytes, model_state_bytes, optimizer_state_bytes, optimizer_state_bytes_per_param,
                     optimizer_temp_bytes, state_dtypes)
from .ops import Op, Precision
from .specs.hardware import Hardware
from .specs.model import CNNSpec, MLPSpec, RNNSpec, TransformerSpec, ViTSpec
from .tree import Node
from .workload import Workload

SCHEMA_VERSION = 1


# --- roofline --------------------------------------------------------------
def efficiency(hw: Hardware, op_class: str, flops: float) -> float:
    """Achievable fraction of peak for an op of this class and size.
    Calibrated curves (``costmodel validate --calibrate``) win over the flat
    per-class factors of ``hardware.efficiency``."""
    cal = hw.calibration
    if cal is not None and op_class in cal.curves:
        c = cal.curves[op_class]
        return max(1e-3, c.max_eff * flops / (flops + c.half_flops)) if flops > 0 else c.max_eff
    return getattr(hw.efficiency, op_class)


def memory_efficiency(hw: Hardware, op_class: str | None = None, ws: float | None = None) -> float:
    """Achieved fraction of ``memory.bandwidth``. A calibrated cache-aware curve
    of ``op_class`` (``calibration.memory_curves``: efficiency as a function of
    the working set ``ws`` in bytes, ``MemoryCurve``) wins when ``ws`` is given;
    then the calibrated ``memory_eff``; then ``hardware.efficiency.memory``."""
    cal = hw.calibration
    if cal is not None:
        if op_class is not None and ws is not None and op_class in cal.memory_curves:
            return cal.memory_curves[op_class].efficiency(ws)
        if cal.memory_eff:
            return cal.memory_eff
    return hw.efficiency.memory


def op_peak(hw: Hardware, p: Precision, op_class: str) -> float:
    if op_class == "elementwise":
        return hw.vector_flops(p.vector_dtype)
    return hw.peak_flops(p.compute)


def roofline(flops: float, nbytes: float, peak: float, eff: float, bw: float, mem_eff: float,
             overhead: float = 0.0) -> tuple[float, str]:
    """(time in s, 'compute' | 'memory')."""
    tc = flops / (peak * eff) if flops else 0.0
    tm = nbytes / (bw * mem_eff) if nbytes else 0.0
    return max(tc, tm) + overhead, ("compute" if tc >= tm else "memory")


@dataclass
class OpCost:
    path: str
    op: Op
    count: int
    fwd_time: float
    bwd_time: float
    bound: str
    bwd_bound: str

    @property
    def intensity(self) -> float:
        return self.op.fwd_flops / self.op.fwd_bytes if self.op.fwd_bytes else math.inf


def _flatten(node: Node, mult: int = 1, path: str = "", out: list | None = None) -> list:
    """``list(node.walk())`` without nested generators (same order, paths, multiplicities)."""
    if out is None:
        out = []
    m = mult * node.count
    here = f"{path}/{node.name}" if path else node.name
    for c in node.children:
        if isinstance(c, Node):
            _flatten(c, m, here, out)
        else:
            out.append((f"{here}/{c.name}", m, c))
    return out


def cost_ops(tree: Node, hw: Hardware, p: Precision, ops: list | None = None) -> list[OpCost]:
    """Roofline time of every op. Same arithmetic as ``roofline()``, with the
    per-(hardware, precision, op class) constants looked up once per call.
    ``ops``: ``list(tree.walk())`` when the caller already has it."""
    bw = hw.memory.bandwidth
    me = memory_efficiency(hw)
    mem_rate = bw * me
    over = hw.calibration.launch_overhead_s if hw.calibration else 0.0
    curves = hw.calibration.curves if hw.calibration is not None else {}
    mcurves = hw.calibration.memory_curves if hw.calibration is not None else {}
    rates: dict[str, tuple] = {}     # op class -> (peak, peak*eff or None when eff depends on the op's size)
    out = []
    for path, m, op in (ops if ops is not None else _flatten(tree)):
        ff, fb, bf_, bb_ = op.fwd_flops, op.fwd_bytes, op.bwd_flops, op.bwd_bytes
        if ff == 0 and fb == 0 and bf_ == 0:
            out.append(OpCost(path, op, m, 0.0, 0.0, "-", "-"))
            continue
        cls = op.op_class
        rate = rates.get(cls)
        if rate is None:
            peak = op_peak(hw, p, cls)
            rate = rates[cls] = (peak, None if cls in curves else peak * getattr(hw.efficiency, cls))
        peak, flat = rate
        if flat is None:
            cf = (peak * efficiency(hw, cls, ff)) if ff else 0.0
            cb = (peak * efficiency(hw, cls, bf_)) if bf_ else 0.0
        else:
            cf = cb = flat
        tc = ff / cf if ff else 0.0
        if cls in mcurves:     # cache-aware: the working set is the bytes the op touches
            mc = mcurves[cls]
            tm = fb / (bw * mc.efficiency(fb)) if fb else 0.0
        else:
            mc = None
            tm = fb / mem_rate if fb else 0.0
        tf = max(tc, tm) + over
        bound_f = "compute" if tc >= tm else "memory"
        tc = bf_ / cb if bf_ else 0.0
        if mc is not None:
            tm = bb_ / (bw * mc.efficiency(bb_)) if bb_ else 0.0
        else:
            tm = bb_ / mem_rate if bb_ else 0.0
        tb = max(tc, tm) + (over if bf_ or bb_ else 0.0)
        out.append(OpCost(path, op, m, tf, tb, bound_f, "compute" if tc >= tm else "memory"))
    return out


# --- resolution --------------------------------------------------------------
def _apply_overrides(obj, overrides: dict[str, Any], prefix: str):
    """Return a copy of a pydantic object with dotted-path overrides applied
    (``layers[3].kernel`` or ``layers.3.kernel`` reach into lists).  A path that
    does not exist lists the valid fields at the level where it went wrong."""
    if not overrides:
        return obj
    import re as _re
    data = obj.model_dump(by_alias=True)
    for path, value in overrides.items():
        keys = [k for k in _re.sub(r"\[(-?\d+)\]", r".\1", path).split(".")]
        cur = data
        for i, k in enumerate(keys):
            where = (prefix + _re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", ".".join(keys[:i]))) if i \
                else (prefix.rstrip(".") or "top level")
            if isinstance(cur, list):
                if not _re.fullmatch(r"\d+", k) or int(k) >= len(cur):
                    raise CostModelError(f"no item {k!r} in {where} (expected an index 0..{len(cur) - 1})",
                                         field=prefix + path)
                k = int(k)
            elif not isinstance(cur, dict):
                raise CostModelError(f"{where} is a single value, not a group of fields "
                                     f"(expected {where}=VALUE)", field=prefix + path)
            elif k not in cur:
                valid = sorted(str(x) for x in cur)
                shown = ", ".join(valid[:24]) + (f", ... ({len(valid) - 24} more: `costmodel show` lists all)"
                                                 if len(valid) > 24 else "")
                raise CostModelError(f"no field {k!r} at {where}{suggest(k, valid)} "
                                     f"(valid fields: {shown})", field=prefix + path)
            if i == len(keys) - 1:
                cur[k] = value
            else:
                if cur[k] is None:
                    cur[k] = {}
                cur = cur[k]
    from pydantic import TypeAdapter, ValidationError
    from .catalog import first_error, validation_error
    from .specs.model import ModelSpec
    root = Hardware if isinstance(obj, Hardware) else Workload if isinstance(obj, Workload) else ModelSpec
    try:
        if root is ModelSpec:
            return TypeAdapter(ModelSpec).validate_python(data)
        return root.model_validate(data)
    except ValidationError as e:
        raise validation_error(first_error(e), root, prefix=prefix) from None


def split_overrides(overrides: dict[str, Any] | None):
    m, h, w = {}, {}, {}
    for k, v in (overrides or {}).items():
        if k.startswith("model."):
            m[k[6:]] = v
        elif k.startswith("hardware."):
            h[k[9:]] = v
        elif k.startswith("workload."):
            w[k[9:]] = v
        else:
            w[k] = v
    return m, h, w


@dataclass
class Resolved:
    spec: Any
    hw: Hardware
    wl: Workload
    precision: str
    seq: int
    target_seq: int
    image: int
    gpus: int
    dp: int
    micro_batch: int
    accum: int
    cache: Any = None          # sweep memo (see estimate_resolved); None: build everything afresh
    explain: bool = True       # attach the --explain entries to the report


def _default_precision(hw: Hardware) -> str:
    return "bf16" if hw.peak.bf16 is not None else "fp32"


def resolve(spec, hw: Hardware, wl: Workload) -> Resolved:
    prec = wl.precision or _default_precision(hw)
    if hw.peak_flops(prec) is None:
        from .workload import PRECISIONS
        have = ", ".join(d for d in hw.supported_dtypes() if d in PRECISIONS)
        raise CostModelError(f"{hw.name} has no {prec} support (expected one of: {have})", field="precision")
    seq = target = image = 0
    if isinstance(spec, TransformerSpec):
        seq = wl.seq or spec.seq_default
        target = wl.target_seq or (seq if spec.structure == "encoder-decoder" else 0)
        for what, n in (("seq", seq), ("target_seq", target)):
            if n > spec.max_positions and spec.position in ("learned",):
                raise CostModelError(f"{what} {n} exceeds the model's {spec.max_positions} learned positions "
                                     f"(expected <= {spec.max_positions}; override with --set model.max_positions=N)",
                                     field=what)
        if wl.mode == "inference" and spec.structure != "encoder":
            dec = "target_seq" if spec.structure == "encoder-decoder" else "seq"
            prompt = target if spec.structure == "encoder-decoder" else seq
            room = spec.max_positions - wl.gen_tokens
            if (spec.position == "learned" and prompt + wl.gen_tokens > spec.max_positions
                    and getattr(wl, dec) is None and spec.default_seq is None and room >= 1):
                # the default prompt is the whole context: leave room for the generated tokens
                prompt = room
                if dec == "seq":
                    seq = room
                else:
                    target = room
            ctx = prompt + wl.gen_tokens
            if spec.position == "learned" and ctx > spec.max_positions:
                hint = f"; e.g. --{dec.replace('_', '-')} {room}" if room >= 1 else ""
                raise CostModelError(f"prompt {prompt} + gen_tokens {wl.gen_tokens} = {ctx} exceeds the model's "
                                     f"{spec.max_positions} learned positions (expected {dec} + gen_tokens <= "
                                     f"{spec.max_positions}{hint})", field="gen_tokens")
    elif isinstance(spec, RNNSpec):
        seq = wl.seq or spec.default_seq
    elif isinstance(spec, (CNNSpec, ViTSpec)):
        image = wl.image or spec.image_size
        if isinstance(spec, ViTSpec) and image % spec.patch_size:
            raise CostModelError(f"image {image} is not a multiple of the patch size {spec.patch_size}",
                                 field="image")
        if isinstance(spec, ViTSpec) and image != spec.image_size:
            raise CostModelError(f"image {image} differs from the model's {spec.image_size} (its position "
                                 f"embedding is fixed; override with --set model.image_size={image})", field="image")
        if isinstance(spec, CNNSpec):
            from .catalog import cnn_shape_problem
            bad = cnn_shape_problem(spec, image)
            if bad is not None:
                raise CostModelError(f"model.layers[{bad[0]}]: {bad[1]}", field="image")
    # parallel degrees
    tp, pp = wl.tp, wl.pp
    if wl.gpus is not None and wl.dp is not None and wl.gpus != wl.dp * tp * pp:
        raise CostModelError(f"gpus {wl.gpus} != dp {wl.dp} x tp {tp} x pp {pp} (expected gpus = "
                             f"{wl.dp * tp * pp}, or give only one of --gpus / --dp)", field="gpus")
    if wl.dp is not None:
        dp = wl.dp
    elif wl.gpus is not None:
        if wl.gpus % (tp * pp):
            raise CostModelError(f"gpus {wl.gpus} is not divisible by tp x pp = {tp * pp} "
                                 f"(expected a multiple of {tp * pp})", field="gpus")
        dp = wl.gpus // (tp * pp)
    else:
        dp = 1
    gpus = dp * tp * pp
    if tp > 1 or pp > 1:
        _check_model_parallel(spec, tp, pp)
    if wl.zero and dp == 1 and wl.zero > 0:
        pass  # ZeRO over one device is a no-op; allowed
    if wl.micro_batch is not None:
        mb = wl.micro_batch
        if wl.batch % (dp * mb):
            raise CostModelError(f"batch {wl.batch} is not divisible by dp {dp} x micro_batch {mb} "
                                 f"(expected a batch that is a multiple of {dp * mb})", field="micro_batch")
    else:
        if wl.batch % dp:
            raise CostModelError(f"batch {wl.batch} is not divisible by dp {dp} (expected a multiple of {dp})",
                                 field="batch")
        mb = wl.batch // dp
    accum = wl.batch // (dp * mb)
    return Resolved(spec, hw, wl, prec, seq, target, image, gpus, dp, mb, accum)


def _divisors(n: int) -> str:
    """' (expected a divisor of n: 1, 2, ...)' listing the small divisors."""
    ds = [d for d in range(1, min(n, 4096) + 1) if n % d == 0]
    shown = ", ".join(map(str, ds[:12])) + (", ..." if len(ds) > 12 else "")
    return f" (expected a divisor of {n}: {shown})"


def _check_model_parallel(spec, tp, pp):
    if isinstance(spec, TransformerSpec):
        if spec.heads % tp:
            raise CostModelError(f"tp {tp} does not divide heads {spec.heads}{_divisors(spec.heads)}", field="tp")
        if spec.n_kv_heads % tp and tp % spec.n_kv_heads:
            raise CostModelError(f"tp {tp} does not divide kv_heads {spec.n_kv_heads} (expected a divisor or a "
                                 f"multiple of {spec.n_kv_heads})", field="tp")
        if spec.d_ff % tp:
            raise CostModelError(f"tp {tp} does not divide d_ff {spec.d_ff}{_divisors(spec.d_ff)}", field="tp")
        layers = spec.layers + (spec.decoder_layers or 0 if spec.structure == "encoder-decoder" else 0)
        if layers % pp:
            raise CostModelError(f"pp {pp} does not divide the {layers} layers{_divisors(layers)}", field="pp")
    elif isinstance(spec, ViTSpec):
        if spec.heads % tp or spec.d_ff % tp:
            raise CostModelError(f"tp {tp} does not divide heads {spec.heads} and d_ff {spec.d_ff}"
                                 f"{_divisors(math.gcd(spec.heads, spec.d_ff))}", field="tp")
        if spec.layers % pp:
            raise CostModelError(f"pp {pp} does not divide the {spec.layers} layers{_divisors(spec.layers)}",
                                 field="pp")
    elif tp > 1 or pp > 1:
        raise CostModelError(f"tensor/pipeline parallelism is modelled for transformers only, not {spec.arch}",
                             field="tp")


# --- the report --------------------------------------------------------------
@dataclass
class Report:
    model: str
    hardware: str
    workload: dict
    values: dict
    ops: list[OpCost]
    tree: Node
    explain: list[dict] = field(default_factory=list)
    memory_lines: list[tuple[str, float]] = field(default_factory=list)

    def __getitem__(self, k):
        return self.values[k]

    @classmethod
    def lazy(cls, model, hardware, workload, values, load, memory_lines) -> "Report":
        """A report whose ``ops`` and ``tree`` are made by ``load()`` -> (ops, tree) on
        first access (the batch fast path, costmodel/fastpath.py)."""
        rep = cls.__new__(cls)
        rep.__dict__.update(model=model, hardware=hardware, workload=workload, values=values, explain=[],
                            memory_lines=memory_lines, _load=load)
        return rep

    def __getattr__(self, name):   # only reached while a lazy report's ops / tree are not made yet
        load = self.__dict__.get("_load") if name in ("ops", "tree") else None
        if load is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self.ops, self.tree = load()
        del self.__dict__["_load"]
        return self.__dict__[name]

    def __getstate__(self):        # pickle / copy: a lazy report makes its ops and tree first
        if "_load" in self.__dict__:
            self.__getattr__("ops")
        return self.__dict__

    def to_dict(self, ops: bool = True) -> dict:
        d = {"schema_version": SCHEMA_VERSION, "model": self.model, "hardware": self.hardware,
             "workload": self.workload}
        d.update(self.values)
        d["memory_ledger"] = [{"name": n, "bytes": b} for n, b in self.memory_lines]
        if ops:
            d["ops_scope"] = "one device, one micro-batch forward (backward in bwd_*)"
            d["ops"] = [op_row(c) for c in self.ops]
        if self.explain:
            d["explain"] = self.explain
        return d


def op_row(c: OpCost) -> dict:
    o = c.op
    return {"name": c.path, "kind": o.kind, "op_class": o.op_class, "count": c.count,
            "flops": o.fwd_flops, "bwd_flops": o.bwd_flops, "matmul_flops": o.matmul_flops,
            "bytes": o.fwd_bytes, "bwd_bytes": o.bwd_bytes, "params": o.params, "saved_bytes": o.saved_bytes,
            "time_s": c.fwd_time, "bwd_time_s": c.bwd_time,
            "intensity": (o.fwd_flops / o.fwd_bytes) if o.fwd_bytes else None,
            "bound": c.bound, "formula": o.formula}


def _sum(costs: list[OpCost], attr: str) -> float:
    return sum(c.count * getattr(c.op, attr) for c in costs)


def _model_kind(spec) -> str:
    return "image" if isinstance(spec, (CNNSpec, ViTSpec)) else ("token" if isinstance(spec, (TransformerSpec, RNNSpec)) else "sample")


def estimate(model, hardware: str | Hardware = "a100-80gb", workload: Workload | dict | None = None,
             overrides: dict[str, Any] | None = None, models_dir=(), hardware_dir=(), **kw) -> Report:
    """Estimate cost. ``model``/``hardware``: names, YAML paths or spec objects.
    ``workload``: a Workload, a dict, or keyword arguments (batch=8, seq=512, ...).
    ``overrides``: dotted paths, e.g. {"hardware.memory.bandwidth": 1.5e12, "model.layers": 48}."""
    spec = load_model(model, models_dir)
    hw = load_hardware(hardware, hardware_dir)
    mo, ho, wo = split_overrides(overrides)
    from pydantic import ValidationError
    try:
        if isinstance(workload, Workload):
            wl = workload
            if kw or wo:
                wl = Workload.model_validate({**wl.model_dump(), **kw, **wo})
        else:
            wl = Workload.model_validate({**(workload or {}), **kw, **wo})
    except ValidationError as e:
        from .catalog import first_error, validation_error
        raise validation_error(first_error(e), Workload) from None
    spec = _apply_overrides(spec, mo, "model.")
    hw = _apply_overrides(hw, ho, "hardware.")
    return estimate_resolved(spec, hw, wl)


def estimate_resolved(spec, hw: Hardware, wl: Workload, *, cache: dict | None = None,
                      explain: bool = True) -> Report:
    """The fast path for sweeps: already-validated spec, Hardware and Workload
    objects (no name lookup, no overrides, no re-validation). ``cache``: a
    dict owned by the caller that memoizes built trees, op costs and their
    sums per (spec, hardware, shape, precision); the caller must not mutate
    ``spec`` or ``hw`` while it reuses the dict. Results are identical to
    ``estimate`` (same arithmetic in the same order)."""
    r = resolve(spec, hw, wl)
    r.cache = cache
    r.explain = explain
    try:
        if wl.mode == "train":
            return _train(r)
        return _inference(r)
    except ValueError as e:   # impossible shapes found while building (empty conv output...)
        raise CostModelError(str(e)) from None


_CACHE_MAX = 4096


def _built(r: Resolved, shape: Shape, p: Precision):
    """(tree, op costs, memo of derived sums) for one shape, memoized in
    ``r.cache`` by object identity: trees per (spec, shape, precision), costs
    per (tree, hardware). Entries keep spec and hardware alive, so an id
    cannot be reused while it is cached."""
    c = r.cache
    if c is None:
        tree = build(r.spec, shape, p)
        return tree, cost_ops(tree, r.hw, p), {"ops": None}
    if len(c) >= _CACHE_MAX:
        c.clear()
    tkey = ("tree", id(r.spec), shape, p)
    t = c.get(tkey)
    if t is None or t[0] is not r.spec:
        tree = build(r.spec, shape, p)
        t = c[tkey] = (r.spec, tree, _flatten(tree))
    ckey = ("costs", id(r.spec), id(r.hw), shape, p)
    hit = c.get(ckey)
    if hit is None or hit[0] is not r.spec or hit[1] is not r.hw:
        hit = c[ckey] = (r.spec, r.hw, cost_ops(t[1], r.hw, p, t[2]), {"ops": t[2]})
    return t[1], hit[2], hit[3]


def _shape(r: Resolved, batch: int, *, training: bool, tp: int = 1, kv_len: int = 0, seq=None) -> Shape:
    return Shape(batch=batch, seq=seq if seq is not None else r.seq, target_seq=r.target_seq, image=r.image,
                 training=training, flash=r.wl.flash, kv_len=kv_len, tp=tp)


def _workload_dict(r: Resolved) -> dict:
    d = r.wl.model_dump()
    d.update(precision=r.precision, seq=r.seq or None, target_seq=r.target_seq or None, image=r.image or None,
             gpus=r.gpus, dp=r.dp, micro_batch=r.micro_batch, grad_accum=r.accum)
    return d


def _units_per_sample(r: Resolved) -> float:
    s = r.spec
    if isinstance(s, TransformerSpec):
        return r.seq + (r.target_seq if s.structure == "encoder-decoder" else 0)
    if isinstance(s, RNNSpec):
        return r.seq
    return 1


def _train(r: Resolved) -> Report:
    """Training step on one device: roofline time of the busiest pipeline stage,
    its memory ledger, communication, bubble, and the whole run. The
    micro-batch-shape work (trees, op costs, their sums) is cached per shape in
    ``train_profiles``, or -- a new micro-batch of a shape already seen --
    evaluated without a build by costmodel/fastpath.py (identical numbers;
    the report then makes its ops and tree when read); everything else is
    arithmetic in ``_train_values`` (the planner reuses both)."""
    spec, hw = r.spec, r.hw
    from .fastpath import train_fast
    fast = train_fast(r)     # a micro-batch of an already seen shape: no tree build (identical results)
    if fast is not None:
        prof, fprof, ib, load = fast
        values, mem_lines = _train_values(r, prof, fprof)
        values["arithmetic_intensity"], values["bound"] = ib
        rep = Report.lazy(spec.name, hw.name, _workload_dict(r), values, load, mem_lines)
    else:
        prof, fprof, costs, dev_tree, memo = train_profiles(r)
        values, mem_lines = _train_values(r, prof, fprof)
        ib = memo.get("intensity_bound")
        if ib is None:
            ib = memo["intensity_bound"] = (_intensity(costs), _bound(costs))
        values["arithmetic_intensity"], values["bound"] = ib
        rep = Report(spec.name, hw.name, _workload_dict(r), values, costs, dev_tree, memory_lines=mem_lines)
    if r.explain:
        from .explain import explain_train
        rep.explain = explain_train(rep, r)
    return rep


def train_profiles(r: Resolved):
    """(device profile, model profile, op costs, device tree, memo) for r's
    micro-batch shape: the device tree has heads / d_ff split by tp; the model
    profile sums the unsplit (tp = 1) tree. Memoized in ``r.cache``."""
    p = Precision.of(r.precision)
    tp, mb = r.wl.tp, r.micro_batch
    dev_tree, costs, memo = _built(r, _shape(r, mb, training=True, tp=tp), p)
    if tp == 1:
        full_tree, full_memo = dev_tree, memo
    else:
        full_tree, _, full_memo = _built(r, _shape(r, mb, training=True, tp=1), p)
    prof = memo.get("train_profile")
    if prof is None:
        prof = memo["train_profile"] = _train_profile(r, costs, p)
    fprof = full_memo.get("model_profile")
    if fprof is None:
        fprof = full_memo["model_profile"] = _model_profile(full_memo["ops"] or _flatten(full_tree), r.wl.flash)
    return prof, fprof, costs, dev_tree, memo


# Segments of a transformer for pipeline stages: ops before the first repeated
# layer (embeddings: first stage), the layers (split evenly over pp), ops
# between two stacks (encoder final norm, decoder embeddings: spread), and ops
# after the last layer (final norm, LM head, loss: last stage).
_SEGS = ("pre", "layer", "mid", "post")


def _segments(paths: list[str]) -> list[str]:
    idx = [i for i, pth in enumerate(paths) if "/layer/" in pth]
    if not idx:
        return ["pre"] * len(paths)
    i0, i1 = idx[0], idx[-1]
    return ["layer" if "/layer/" in pth else ("pre" if i < i0 else "post" if i > i1 else "mid")
            for i, pth in enumerate(paths)]


def _in_block(path: str) -> bool:
    """Ops of a repeated layer / residual block: what full recomputation re-runs."""
    return "/layer" in path or "/block" in path


def _block_input(o: Op, p: Precision) -> float:
    """Bytes of a block's input (what full recomputation keeps), from its first op."""
    d = o.dims
    if o.kind == "norm":
        return d["rows"] * d["dim"] * p.act_bytes
    if o.kind == "linear":
        return d["tokens"] * d["d_in"] * p.act_bytes
    if o.kind == "conv2d":
        return d["n"] * d["c_in"] * d["h"] * d["w"] * p.act_bytes
    if o.kind == "rnn":
        return d["batch"] * d["seq"] * d["d_in"] * p.act_bytes
    return 0.0


def _quad_saved(o: Op, act_bytes: int) -> float:
    """Bytes of seq x seq tensors among an op's saved tensors -- what selective
    recomputation drops (Korthikanti et al. 2022, sec. 5: softmax output,
    attention-dropout mask, the probabilities the PV product keeps). QK^T keeps
    Q and K (s x d_head); PV keeps V; flash attention keeps no s x s tensor."""
    if not o.quadratic or o.kind == "flash_attention":
        return 0.0
    if o.kind == "bmm":
        if o.name.endswith("values"):
            d = o.dims
            return max(0.0, o.saved_bytes - d["batch"] * d["k"] * d["n"] * act_bytes)
        return 0.0
    return o.saved_bytes


def _vocab_split(o: Op, spec, tp: int) -> int:
    """Megatron-LM splits the vocabulary over the tensor-parallel group:
    vocabulary-parallel embedding, column-parallel LM head and parallel
    cross-entropy (Shoeybi et al. 2019, sec. 3). The divisor of the op's
    work (1: not split, or the builder already split it)."""
    if tp == 1 or not isinstance(spec, TransformerSpec):
        return 1
    v = spec.vocab_size
    if o.kind == "linear" and o.name == "lm_head" and o.dims.get("d_out") == v:
        return tp
    if o.kind == "cross_entropy" and o.dims.get("vocab") == v:
        return tp
    return 1


def _train_profile(r: Resolved, costs: list[OpCost], p: Precision) -> dict:
    """Per-device, per-micro-batch sums by segment, for every recomputation and
    sequence-parallel choice at once (cached with the op costs)."""
    spec, tp, flash = r.spec, r.wl.tp, r.wl.flash
    keys = ("fwd", "bwd", "params", "saved", "repl", "quad", "bk_saved", "bk_repl", "bk_quad", "bk_inputs",
            "rec_full", "rec_sel")
    P: dict = {k: dict.fromkeys(_SEGS, 0.0) for k in keys}
    blocks: dict = {}
    units: dict = {}           # block -> parameters of one instance (a ZeRO-3 / FSDP unit)
    tied = 0.0
    vocab = getattr(spec, "vocab_size", None)
    max_tensor = dict.fromkeys(_SEGS, 0.0)   # elements of the largest parameter tensor on the device
    for c, s in zip(costs, _segments([c.path for c in costs])):
        o, n = c.op, c.count
        k = _vocab_split(o, spec, tp)
        if o.param_shapes:
            dv = tp if _vocab_table(o, spec, tp) else k
            max_tensor[s] = max(max_tensor[s], max(math.prod(sh) for sh in o.param_shapes) / dv)
        P["fwd"][s] += n * c.fwd_time / k
        P["bwd"][s] += n * c.bwd_time / k
        prm = o.params / k
        if tp > 1 and o.kind == "embedding" and o.name == "token" and o.dims.get("rows") == vocab:
            prm = o.params / tp
            if o.params and not tied:
                tied = prm
        elif o.kind == "embedding" and o.name == "token" and o.params and not tied:
            tied = prm
        P["params"][s] += n * prm
        sb = o.saved_bytes / (k if o.kind == "cross_entropy" else 1)
        rp = sb if _replicated(c) else 0.0
        qd = _quad_saved(o, p.act_bytes)
        if _in_block(c.path):
            key = c.path.rsplit("/", 1)[0]
            b = blocks.get(key)
            if b is None:
                b = blocks[key] = [0.0, 0.0, 0.0, _block_input(o, p), n, s]
            b[0] += sb
            b[1] += rp
            b[2] += qd
            units[key] = units.get(key, 0.0) + prm
            P["bk_saved"][s] += n * sb
            P["bk_repl"][s] += n * rp
            P["bk_quad"][s] += n * qd
            P["rec_full"][s] += n * c.fwd_time / k
        else:
            P["saved"][s] += n * sb
            P["repl"][s] += n * rp
            P["quad"][s] += n * qd
            units[c.path] = prm
        if o.quadratic and not flash:
            P["rec_sel"][s] += n * c.fwd_time
    for sv, rp, qd, inp, n, s in blocks.values():
        P["bk_inputs"][s] += n * inp
    P["working"] = max((b[0] for b in blocks.values()), default=0.0)
    P["working_sp"] = max((b[0] - b[1] * (1 - 1 / tp) for b in blocks.values()), default=0.0)
    layer = next((b for key, b in blocks.items() if key.endswith("/layer")), None)
    P["layer_one"] = tuple(layer[:4]) if layer else None
    P["max_unit_params"] = max(units.values(), default=0.0)
    P["tied_params"] = tied if (isinstance(spec, TransformerSpec) and spec.tied_embeddings and spec.lm_head) else 0.0
    P["max_tensor"] = max_tensor
    P["bwd_static"], P["bwd_cols"], P["bwd_table"] = _bwd_records(r, costs, p)
    P["bwd_tp"] = tp
    P["bwd_memo"] = {}          # _bwd_lines
    return P


def _vocab_table(o: Op, spec, tp: int) -> bool:
    """A token embedding of the vocabulary split over the tensor-parallel group (Megatron's
    vocabulary-parallel embedding; the builder keeps the whole table)."""
    return (tp > 1 and o.kind == "embedding" and o.name == "token"
            and o.dims.get("rows") == getattr(spec, "vocab_size", None))


# --- the backward pass's transient memory -------------------------------------
_SEGI = {s: i for i, s in enumerate(_SEGS)}


def _table_users(costs: list, spec) -> list[int]:
    """Indices of the ops that read one vocabulary table through autograd: the
    token embedding that owns it, embeddings sharing it (an encoder-decoder's
    decoder: no parameters of its own) and a tied LM head (none either).
    Empty unless at least two ops share the table."""
    if not isinstance(spec, TransformerSpec):
        return []
    v = spec.vocab_size
    out = []
    for i, c in enumerate(costs):
        o = c.op
        if o.kind == "embedding" and o.name == "token" and o.dims.get("rows") == v and (o.params == 0 or not out):
            out.append(i)
        elif o.kind == "linear" and o.name == "lm_head" and o.params == 0 and o.dims.get("d_out") == v:
            out.append(i)
    return out if len(out) >= 2 and costs[out[0]].op.params else []


def _bwd_records(r, costs: list, p: Precision) -> tuple[dict, tuple, float]:
    """What ``_bwd_scan`` needs, per op in forward order: ``static`` (the same at
    every micro-batch: runs of ops -- one repeated block, or one op outside
    blocks -- as (first, last, is block), segment index, count, loss vocab
    divisor, replicated, weight-gradient bytes of its backward, the constant
    bytes of each op's moment per (per segment, .grad exists), the later sums
    of a shared vocabulary table, path); ``cols`` (saved bytes, seq x seq saved
    bytes, block input bytes at a block's first op, gradient bytes of its
    backward: ``memory.backward_bytes``), which scale with the micro-batch; and
    the shared table's bytes.

    Shared table (pp = 1; ``_table_users``): its first gradient in backward
    order is the last reader's weight gradient; each earlier reader's adds a
    second table and a sum; between the first and the last reader the buffered
    partial sum is alive, extra only when ``.grad`` exists (else it is the
    ``.grad`` the ledger already counts)."""
    spec, tp = r.spec, r.wl.tp
    wb = state_dtypes(r.precision, True, False)["weight"]     # autograd's gradients: the parameter dtype
    users = _table_users(costs, spec)
    table = costs[users[0]].op.params / (tp if tp > 1 else 1) * wb if users else 0.0
    first, last = (users[0], users[-1]) if users else (-1, -1)
    seen: set = set()
    runs, seg, cnt, kdiv, rep, wgl, roles, paths = [], [], [], [], [], [], [], []
    sv, qd, inp, gl = [], [], [], []
    prev = None
    for i, (c, s) in enumerate(zip(costs, _segments([c.path for c in costs]))):
        o = c.op
        k = _vocab_split(o, spec, tp)
        g, we = backward_bytes(o, p.act_bytes, k)
        if _vocab_table(o, spec, tp):
            we = we / tp
        key = c.path.rsplit("/", 1)[0] if _in_block(c.path) else None
        if key is not None and key == prev:
            runs[-1][1] = i
        else:
            runs.append([i, i, key is not None])
        prev = key
        blk_inp = 0.0
        if key is not None and key not in seen:
            seen.add(key)
            blk_inp = _block_input(o, p)
        seg.append(_SEGI[s])
        cnt.append(c.count)
        kdiv.append(k if o.kind == "cross_entropy" else 1)
        rep.append(_replicated(c))
        wgl.append(we * wb)
        roles.append((1 if i == last else 2 if i in users else 3 if first < i < last else 0) if users else 0)
        paths.append(c.path)
        sv.append(o.saved_bytes)
        qd.append(_quad_saved(o, p.act_bytes))
        inp.append(blk_inp)
        gl.append(g)
    const = {}
    for per_segment in (False, True):
        for existing in (False, True):
            cs = []
            for wg, role in zip(wgl, roles):
                if role == 1:
                    wg = table
                if role == 2 and not per_segment:
                    cs.append(2 * table if existing else table)
                elif role == 3 and not per_segment:
                    cs.append(wg + table if existing else 0.0)
                else:
                    cs.append(wg if existing else 0.0)
            const[(per_segment, existing)] = tuple(cs)
    sums = {e: {i: (3 * table if e else 2 * table, paths[i] + ": shared-table gradient sum")
                for i, role in enumerate(roles) if role == 2} for e in (False, True)}
    static = dict(runs=tuple(tuple(x) for x in runs), seg=tuple(seg), count=tuple(cnt), k=tuple(kdiv),
                  rep=tuple(rep), const=const, sums=sums, path=tuple(paths))
    return static, (sv, qd, inp, gl), table


def _envelope(env: dict, path: tuple, sums: dict) -> tuple:
    """Lines (value at this micro-batch, constant, where) no other line beats at
    every micro-batch: ``x * value + constant`` for x = micro-batch / this one."""
    best = -math.inf
    out = []
    for c in sorted(env, reverse=True):
        v, q, is_sum = env[c]
        if v > best:
            out.append((v, c, sums[q][1] if is_sum else path[q]))
            best = v
    out.reverse()
    return tuple(out)


def _bwd_scan(static: dict, cols: tuple, tp: int, mode: str, spv: bool, existing: bool, per_segment: bool,
              W: float):
    """The backward pass's transient peak above the saved activations, as lines
    (``_envelope``), for one recompute ``mode``, sequence parallelism ``spv``,
    and ``existing`` (``.grad`` already allocated); records: ``_bwd_records``.

    Backward runs the ops in reverse; while op i's backward runs, the saved
    tensors of op i and of every op before it are alive, those of later ops are
    freed (PyTorch frees a node's saved tensors once it has run,
    retain_graph=False). The ledger's activations count all saved tensors, so
    op i adds ``moment_i - freed_i``: ``moment_i`` = its gradient bytes
    (``memory.backward_bytes``) + its weight-gradient temporary when ``.grad``
    already exists (zero_grad(set_to_none=False), or any micro-batch after the
    first), ``freed_i`` = the saved bytes after op i (a repeated block's last
    instance is the worst one: within it, only its later ops are freed). With
    full recomputation (``W``: the recompute working set the ledger books) a
    block being back-propagated holds its recomputed activations, and no block
    is recomputed while ops outside blocks run.

    A vocabulary table read by several ops (a tied LM head, an
    encoder-decoder's shared embedding) gets one gradient per reader: autograd
    buffers the first and sums each later one into a new tensor (aten::add of
    two (vocab, d) tables: buffered + new + sum alive at once), the last sum
    becoming ``.grad``. Measured: the CPU peaks of gpt2 and gpt2-medium are the
    model states plus 3 tables to within 3 KB (validation/cpu-amd-epyc).

    ``per_segment``: {segment: lines} with only the segment's later ops freed
    (pipeline stages add their later segments; no shared table across stages),
    else the whole device in order (pp = 1). A line is (bytes above the
    activations at this micro-batch -- they scale with it --, bytes that do not,
    op path).
    """
    sv, qd, inp, g = cols
    ff, spd = (1 - 1 / tp, tp) if spv else (0.0, 1)
    full = mode == "full"
    x = [a / b for a, b in zip(sv, static["k"])]
    if ff:
        x = [a - a * ff if r else a for a, r in zip(x, static["rep"])]
    if mode == "selective":
        x = [a - b for a, b in zip(x, qd)]
    C = static["const"][(per_segment, existing)]
    sums = {} if per_segment else static["sums"][existing]
    seg, count = static["seg"], static["count"]
    envs = [{} for _ in _SEGS] if per_segment else None
    env: dict = {}
    after = 0.0
    seg_cur = -1
    for j, i, blk in reversed(static["runs"]):
        if per_segment and seg[j] != seg_cur:
            after, seg_cur, env = 0.0, seg[j], envs[seg[j]]
        tot = sum(x[j:i + 1]) if blk else x[i]
        loc = after + ((W - tot if blk else W) if full else 0.0)
        for q in range(i, j - 1, -1):
            v = g[q] - loc
            c = C[q]
            got = env.get(c)
            if got is None or v > got[0]:
                env[c] = (v, q, False)
            if q in sums:               # the shared table's gradient sum: this op's grad-out is freed
                c = sums[q][0]
                got = env.get(c)
                if got is None or 0.0 - loc > got[0]:
                    env[c] = (0.0 - loc, q, True)
            loc += x[q]
        after += count[j] * ((inp[j] / spd if blk else tot) if full else tot)
    sm = static["sums"][existing]
    if per_segment:
        return {s: _envelope(envs[n], static["path"], sm) for n, s in enumerate(_SEGS)}
    return _envelope(env, static["path"], sm)


def _bwd_lines(P: dict, mode: str, spv: bool, existing: bool, per_segment: bool):
    """``_bwd_scan`` of a training profile, memoized in it."""
    key = (mode, spv, existing, per_segment)
    got = P["bwd_memo"].get(key)
    if got is None:
        W = (P["working_sp"] if spv else P["working"]) if mode == "full" else 0.0
        got = P["bwd_memo"][key] = _bwd_scan(P["bwd_static"], P["bwd_cols"], P["bwd_tp"], mode, spv, existing,
                                             per_segment, W)
    return got


def _model_profile(full_ops: list, flash: bool) -> dict:
    """Model-level (all devices, one micro-batch) FLOP and parameter sums."""
    F = dict(fwd=0.0, bwd=0.0, mm=0.0, bmm=0.0, flash_mm=0.0, rec_full=0.0, rec_full_mm=0.0, rec_sel=0.0,
             rec_sel_mm=0.0, params=0)
    for path, m, o in full_ops:
        F["fwd"] += m * o.fwd_flops
        F["bwd"] += m * o.bwd_flops
        F["mm"] += m * o.matmul_flops
        F["bmm"] += m * o.bwd_matmul_flops
        F["params"] += m * o.params
        if o.kind == "flash_attention":
            F["flash_mm"] += m * o.matmul_flops
        if _in_block(path):
            F["rec_full"] += m * o.fwd_flops
            F["rec_full_mm"] += m * o.matmul_flops
        if o.quadratic and not flash:
            F["rec_sel"] += m * o.fwd_flops
            F["rec_sel_mm"] += m * o.matmul_flops
    F["params"] = int(F["params"])
    F["ops"] = full_ops
    F["opt"] = {}
    return F


def _opt_total(F: dict, optimizer: str, state_bytes: int) -> float:
    """Optimizer-state bytes of the whole model (exact per parameter tensor)."""
    key = (optimizer, state_bytes)
    if key not in F["opt"]:
        if optimizer in ("adafactor", "adam-8bit"):
            F["opt"][key] = float(sum(m * optimizer_state_bytes(optimizer, o.param_shapes, state_bytes)
                                      for _, m, o in F["ops"] if o.param_shapes))
        else:
            F["opt"][key] = F["params"] * optimizer_state_bytes_per_param(optimizer, state_bytes)
    return F["opt"][key]


# --- parameter update ---------------------------------------------------------
def update_bytes_per_param(optimizer: str, impl: str, dtypes: dict, opt_bpp: float) -> float:
    """Bytes one optimizer step moves per parameter (reads + writes).

    fused (one kernel; torch ``fused=True``, apex FusedAdam): read the updated
    weights (fp32 master when there is one), the gradient and the states, write
    weights and states back, plus the 16-bit copy of master weights:
    ``2*w + g + 2*states (+ 16-bit weight)``.

    foreach / single-tensor (torch.optim defaults: foreach on CUDA,
    single-tensor on the CPU; torch/optim/adam.py ``_multi_tensor_adam`` /
    ``_single_tensor_adam``, torch 2.13, non-capturable path), one kernel per line,
    w = updated weight, g = grad, m, v = states, t = temporaries (state dtype):

        param.mul_(1 - lr*wd)                      r w, w w          (AdamW only)
        exp_avg.lerp_(grad, 1 - beta1)             r m, r g, w m
        exp_avg_sq.mul_(beta2)                     r v, w v
        exp_avg_sq.addcmul_(grad, grad, 1 - beta2) r v, r g, w v
        denom = exp_avg_sq.sqrt()                  r v, w t
        denom / bias_correction2_sqrt              r t, w t
        .add_(eps)                                 r t, w t
        param.addcdiv_(exp_avg, denom, -step)      r w, r m, r t, w w

    = 4w + 2g + 8s + 6s per parameter for AdamW (2w fewer for Adam: torch's
    default weight_decay is 0): 80 bytes in fp32, against 28 fused. SGD with
    momentum (torch/optim/sgd.py ``_single_tensor_sgd``): ``buf.mul_(mu)``
    ``.add_(grad)``, ``param.add_(buf)`` = 2w + g + 5s; plain SGD's single
    ``param.add_(grad)`` equals the fused pass."""
    wu = dtypes["master"] or dtypes["weight"]
    copy = dtypes["weight"] if dtypes["master"] else 0
    g, st = dtypes["grad"], dtypes["state"]
    if impl == "fused" or optimizer == "sgd":
        return 2 * wu + g + copy + 2 * opt_bpp
    copy_unfused = (wu + copy) if copy else 0       # a separate cast kernel reads the master copy
    if optimizer in ("adam", "adamw"):
        return (4 if optimizer == "adamw" else 2) * wu + 2 * g + 14 * st + copy_unfused
    if optimizer == "sgd-momentum":
        return 2 * wu + g + 5 * st + copy_unfused
    raise CostModelError(f"{impl!r} is modelled only for adam, adamw, sgd and sgd-momentum (torch.optim's "
                         f"kernels), not {optimizer!r} (expected fused)", field="optimizer_impl")


# zero_grad(set_to_none=False): grad.zero_() writes g, then backward's AccumulateGrad
# adds in place, grad += new_grad: read 2 g, write g (torch/csrc/autograd/functions/accumulate_grad.h)
ZERO_GRAD_PASSES = 4


def update_kernels_per_tensor(optimizer: str | None, impl: str, zero_grad: str) -> int:
    """Kernel launches per parameter tensor of one update. single-tensor: one
    per line above, plus ``step_t += 1`` (a tensor op) for Adam(W); foreach
    and fused launch once per list of tensors (counted as 0 per tensor);
    zero_grad="zero": ``grad.zero_()`` and the accumulation, per tensor."""
    k = 0
    if optimizer and impl == "single-tensor":
        k = {"adamw": 9, "adam": 8, "sgd-momentum": 3, "sgd": 1}.get(optimizer, 0)
    return k + (2 if zero_grad == "zero" else 0)


def tied_grad_sum_time(hw: Hardware, tied_params: float, grad_bytes: float) -> float:
    """A table shared by the token embedding and the LM head gets two gradients
    per backward; autograd adds them into a new tensor (``aten::add`` of two
    (vocab, d) tensors, read 2 + write 1, in torch.profiler's trace of a gpt2
    training step). Costed as an elementwise op on the calibrated elementwise
    memory curve (``MemoryCurve``); 0 on hardware without one, where it is left
    out as before (at HBM bandwidth it is a fraction of a millisecond)."""
    cal = hw.calibration
    if cal is None or "elementwise" not in cal.memory_curves:
        return 0.0
    nbytes = 3 * tied_params * grad_bytes
    return nbytes / (hw.memory.bandwidth * memory_efficiency(hw, "elementwise", nbytes)) + cal.launch_overhead_s


def _param_tensors(F: dict) -> list:
    """(elements, multiplicity) of every parameter tensor of the model, cached in F."""
    t = F.get("tensors")
    if t is None:
        t = F["tensors"] = [(math.prod(sh), m) for _, m, o in F["ops"] for sh in o.param_shapes]
    return t


def update_fresh_kernels(optimizer: str | None, impl: str, dtypes: dict) -> list:
    """Bytes per parameter of the update's kernels that write a *new* tensor
    (the rest work in place): single-tensor AdamW's ``exp_avg_sq.sqrt()`` and
    ``/ bias_correction2_sqrt`` (read t, write t each); foreach's
    ``_foreach_sqrt`` (its division and eps are in place)."""
    if optimizer not in ("adam", "adamw") or impl == "fused":
        return []
    st = dtypes["state"]
    return [2 * st] * (2 if impl == "single-tensor" else 1)


def update_time(hw: Hardware, optimizer: str | None, impl: str, zero_grad: str, dtypes: dict, opt_bpp: float,
                tensors: list, share: float = 1.0) -> float:
    """Seconds of the parameter update: the optimizer's kernels (``optimizer``
    None: none) plus zero_grad's fill and accumulation over each parameter
    tensor of ``tensors`` ((elements, multiplicity); ``share`` of each on this
    device). Memory-bound: bytes / (bandwidth * memory efficiency).

    With a calibrated ``optimizer`` memory curve (cache-aware, ``MemoryCurve``)
    each tensor is costed on its own: the in-place kernels at the
    ``optimizer`` curve of the tensor's working set (weight + grad + state
    bytes), the kernels that write a new tensor (``update_fresh_kernels``) as
    elementwise ops (``elementwise`` curve of the bytes they touch), plus the
    calibrated ``launch_overhead_s`` per kernel and ``update_overhead_s`` per
    tensor of an optimizer step."""
    bpp = update_bytes_per_param(optimizer, impl, dtypes, opt_bpp) if optimizer else 0.0
    if zero_grad == "zero":
        bpp += ZERO_GRAD_PASSES * dtypes["grad"]
    bw = hw.memory.bandwidth
    cal = hw.calibration
    if cal is None or "optimizer" not in cal.memory_curves:
        return sum(n * m for n, m in tensors) * share * bpp / (bw * memory_efficiency(hw))
    foot = ((dtypes["master"] or dtypes["weight"]) + dtypes["grad"] + opt_bpp
            + (dtypes["weight"] if dtypes["master"] else 0))
    curve = cal.memory_curves["optimizer"]
    fresh = update_fresh_kernels(optimizer, impl, dtypes)
    inplace = bpp - sum(fresh)
    over = (cal.launch_overhead_s * update_kernels_per_tensor(optimizer, impl, zero_grad)
            + (cal.update_overhead_s if optimizer else 0.0))
    total = 0.0
    for n, m in tensors:
        n = n * share
        t = n * inplace / (bw * curve.efficiency(n * foot)) + over
        for k in fresh:
            t += n * k / (bw * memory_efficiency(hw, "elementwise", n * k))
        total += m * t
    return total


def _stage_sum(d: dict, which: str, pp: int) -> float:
    """A per-segment quantity on one pipeline stage: 'all' (pp = 1), 'first'
    (embeddings + layers/pp) or 'last' (layers/pp + final norm, head, loss)."""
    if which == "all":
        return d["pre"] + d["layer"] + d["mid"] + d["post"]
    return (d["layer"] + d["mid"]) / pp + (d["pre"] if which == "first" else d["post"])


def _seg_activations(P: dict, mode: str, sp: int) -> dict:
    """Saved-for-backward bytes per segment, one micro-batch, for a recompute
    mode; ``sp``: sequence-parallel divisor of the replicated tensors."""
    out = {}
    f = 1 - 1 / sp
    for s in _SEGS:
        a = P["saved"][s] - P["repl"][s] * f
        if mode == "full":
            b = P["bk_inputs"][s] / sp
        else:
            b = P["bk_saved"][s] - P["bk_repl"][s] * f
        if mode == "selective":
            a -= P["quad"][s]
            b -= P["bk_quad"][s]
        out[s] = a + b
    return out


def _check_interleave(r: Resolved):
    wl = r.wl
    v, pp = wl.interleave, wl.pp
    if v == 1:
        return
    if pp == 1:
        raise CostModelError(f"interleave {v} needs pipeline parallelism (pp > 1)", field="interleave")
    layers = commmod._layers(r.spec)
    if layers % (pp * v):
        raise CostModelError(f"pp {pp} x interleave {v} = {pp * v} does not divide the {layers} layers",
                             field="interleave")
    if r.accum % pp:
        raise CostModelError(f"the interleaved schedule needs the micro-batches per step ({r.accum}) to be a "
                             f"multiple of pp {pp} (Narayanan et al. 2021, sec. 2.2.2)", field="micro_batch")


def _train_values(r: Resolved, P: dict, F: dict) -> tuple[dict, list]:
    """Everything of a training step from the cached profiles (no tree walk).

    Step (one device; Narayanan et al. 2021, sec. 2.2 and 3):
        step = m * t_stage + optimizer + exposed comm + bubble,
        t_stage = forward + backward + recompute of one micro-batch on the
                  slowest pipeline stage, m = micro-batches per step (accum),
        bubble = (pp - 1) / interleave * t_stage  (= (p-1)/(v m) of the ideal time;
                 book 11.8.3 line 7365 gives the cruder N/M).
    Memory: the larger of the first and the last stage. With 1F1B the first
    stage keeps min(pp, m) micro-batches in flight (x (1 + (pp-1)/(pp v)) when
    interleaved; Korthikanti et al. 2022, sec. 4.2.3), the last stage one;
    the first holds the embeddings, the last the final norm, LM head, loss and
    (tied weights) a copy of the word embedding. The peak of a stage is
    states + max(activations + the backward pass's working set (``_bwd_scan``),
    the optimizer step's temporaries (``memory.optimizer_temp_bytes``)); the
    ledger lists the lines of whichever is larger.
    """
    spec, hw, wl = r.spec, r.hw, r.wl
    tp, pp, dp, m, v = wl.tp, wl.pp, r.dp, r.accum, wl.interleave
    mb = r.micro_batch
    p = Precision.of(r.precision)
    _check_interleave(r)
    sp = tp if (wl.sequence_parallel and tp > 1) else 1
    mode = wl.recompute
    dtypes = state_dtypes(r.precision, wl.master_weights, wl.fp32_grads)
    params = F["params"]
    opt_bpp = _opt_total(F, wl.optimizer, dtypes["state"]) / params if params else 0.0
    rec = P["rec_full"] if mode == "full" else P["rec_sel"] if mode == "selective" else dict.fromkeys(_SEGS, 0.0)
    acts = _seg_activations(P, mode, sp)
    working = (P["working_sp"] if sp > 1 else P["working"]) if mode == "full" else 0.0
    cap = hw.memory.capacity_bytes
    ctx, slack_f = wl.cuda_context_bytes, wl.allocator_slack
    # ZeRO-3 materialises one unit's (layer's) full parameters to compute with,
    # plus the next one prefetched, and its full gradient before the
    # reduce-scatter (Rajbhandari et al. 2020 sec. 5.3; PyTorch FSDP, Zhao et al.
    # 2023, sec. 3.2: one unit computing + one prefetched); the paper's
    # Psi*(2+2+K)/N leaves this working set out.
    zero3_ws = (P["max_unit_params"] * (2 * dtypes["weight"] + dtypes["grad"])
                if wl.zero >= 3 and dp > 1 else 0.0)
    # transient memory (explicit lines; costmodel.memory): the backward pass's working set above
    # the saved activations (``_bwd_scan``; weight-gradient temporaries when .grad already exists:
    # zero_grad(set_to_none=False) or gradient accumulation), and the optimizer step's temporaries,
    # which coexist with the model states but not with the activations.
    existing = wl.zero_grad == "zero" or m > 1
    shard_opt = dp if wl.zero >= 1 else 1
    stages = {}
    for which in (("all",) if pp == 1 else ("first", "last")):
        prm = _stage_sum(P["params"], which, pp) + (P["tied_params"] if which == "last" else 0.0)
        fwd, bwd, rc = (_stage_sum(P["fwd"], which, pp), _stage_sum(P["bwd"], which, pp),
                        _stage_sum(rec, which, pp))
        if pp == 1 and P["tied_params"]:
            bwd += tied_grad_sum_time(hw, P["tied_params"], p.weight_bytes)
        inflight = 1.0
        if which == "first":
            inflight = min(pp, m) * ((1 + (pp - 1) / (pp * v)) if v > 1 else 1)
        act_mb = _stage_sum(acts, which, pp)
        act = act_mb * inflight + working
        st = model_state_bytes(prm, dtypes, opt_bpp, wl.zero, dp)
        states = sum(st.values()) + zero3_ws
        if pp == 1:
            lines = _bwd_lines(P, mode, sp > 1, existing, False)
            big_t = max(P["max_tensor"].values())
        else:       # the stage's segments, each less the saved bytes of the stage's later segments
            segs = ("pre", "layer", "mid") if which == "first" else ("layer", "mid", "post")
            part = {s: acts[s] / (pp if s in ("layer", "mid") else 1) for s in segs}
            by_seg = _bwd_lines(P, mode, sp > 1, existing, True)
            lines = tuple((val - sum(part[t] for t in segs[i + 1:]), c, where) for i, s in enumerate(segs)
                          for val, c, where in by_seg[s])
            big_t = max(max(P["max_tensor"][s] for s in segs), P["tied_params"] if which == "last" else 0.0)
        ws, ws_at = 0.0, ""
        for val, c, where in lines:
            if val + c > ws:
                ws, ws_at = val + c, where
        opt_tmp = optimizer_temp_bytes(wl.optimizer, wl.optimizer_impl, prm, big_t, dtypes["state"]) / shard_opt
        fb = states + act + ws                       # forward / backward peak
        ob = states - zero3_ws + opt_tmp             # optimizer-step peak (activations freed)
        live = fb if fb >= ob else ob
        slack = slack_f * live
        total = live + slack + ctx
        budget = (cap - ctx) / (1 + slack_f)
        free = budget - states
        per_sample = act / mb if mb else 0.0
        max_mb = int(free // per_sample) if per_sample > 0 and free > 0 and ob <= budget else 0
        for val, c, _ in lines:                      # every line of the working set must fit too
            if not max_mb:
                break
            ps = (act + val) / mb
            if ps > 0:
                max_mb = min(max_mb, max(0, int((free - c) // ps)))
            elif c > free:
                max_mb = 0
        stages[which] = dict(params=prm, fwd=fwd, bwd=bwd, rec=rc, t=fwd + bwd + rc, inflight=inflight,
                             act_mb=act_mb, act=act, st=st, slack=slack, total=total, max_mb=max_mb,
                             ws=ws, ws_at=ws_at, opt_tmp=opt_tmp, phase="backward" if fb >= ob else "optimizer step",
                             fb=fb, ob=ob)
    worst = max(stages.values(), key=lambda s: s["total"])
    slow = max(stages.values(), key=lambda s: s["t"])
    big = max(stages.values(), key=lambda s: s["params"])

    # --- time per device per step -------------------------------------------
    compute_t = m * slow["t"]
    bubble = (pp - 1) / v * slow["t"] if pp > 1 else 0.0
    opt_bytes_moved = (big["params"] * (2 * (dtypes["master"] or dtypes["weight"]) + dtypes["grad"]
                                        + (dtypes["weight"] if dtypes["master"] else 0))
                       + 2 * big["params"] * opt_bpp) / shard_opt
    opt_time = opt_bytes_moved / (hw.memory.bandwidth * memory_efficiency(hw))
    if wl.optimizer_impl != "fused" or wl.zero_grad != "set_to_none" or (
            hw.calibration is not None and "optimizer" in hw.calibration.memory_curves):
        opt_time = update_time(hw, wl.optimizer, wl.optimizer_impl, wl.zero_grad, dtypes, opt_bpp,
                               _param_tensors(F), big["params"] / (params or 1) / shard_opt)
    cm = commmod.step_comm(r, spec, p, big["params"], dtypes, slow["fwd"], slow["bwd"],
                           P["tied_params"] if pp > 1 else 0.0)
    step_t = compute_t + opt_time + cm["exposed_s"] + bubble

    # --- FLOPs for the whole global batch (all devices) -------------------------
    scale = wl.batch / mb
    fwd_flops, bwd_flops = scale * F["fwd"], scale * F["bwd"]
    fwd_mm, bwd_mm = scale * F["mm"], scale * F["bmm"]
    rec_flops = scale * (F["rec_full"] if mode == "full" else F["rec_sel"] if mode == "selective" else 0.0)
    rec_mm = scale * (F["rec_full_mm"] if mode == "full" else F["rec_sel_mm"] if mode == "selective" else 0.0)
    # MFU: model matmul FLOPs, backward = 2x forward (PaLM, Chowdhery et al. 2022,
    # app. B: 6N + 12LHQT per token = exactly these products); HFU adds what is
    # re-executed: recomputation and flash attention's in-kernel recompute of S.
    model_flops = fwd_mm + bwd_mm - 0.5 * scale * F["flash_mm"]
    hw_flops = fwd_mm + bwd_mm + rec_mm
    peak = hw.peak_flops(r.precision)
    mfu = model_flops / (step_t * r.gpus * peak) if step_t > 0 else 0.0
    hfu = hw_flops / (step_t * r.gpus * peak) if step_t > 0 else 0.0

    per_sample = _units_per_sample(r)
    samples_s = wl.batch / step_t if step_t > 0 else 0.0
    run = commmod.run_totals(r, step_t, samples_s * per_sample, fwd_flops + bwd_flops, params)

    st = worst["st"]
    lo = P["layer_one"]
    layer_act = None
    if lo is not None:
        sv, rp, qd, inp = lo
        layer_act = (inp / sp if mode == "full" else sv - rp * (1 - 1 / sp) - (qd if mode == "selective" else 0.0))
    where = next(k for k, s in stages.items() if s is worst)
    # the ledger is the composition of the peak: the forward/backward lines, or (when the
    # optimizer step is the peak) the states and the step's temporaries
    at_bwd = worst["phase"] == "backward"
    mem_lines = [("weights", st["weight"]), ("gradients", st["grad"]), ("master weights (fp32)", st["master"]),
                 (f"optimizer states ({wl.optimizer})", st["optimizer"]),
                 ("ZeRO-3 gathered unit (2 x params + grads)", zero3_ws if at_bwd else 0.0),
                 ("activations" + (f" ({worst['inflight']:g} micro-batches in flight, {where} stage)"
                                   if pp > 1 else ""), worst["act"] if at_bwd else 0.0),
                 (f"backward working set ({worst['ws_at'].split('/', 1)[-1] or '-'})", worst["ws"] if at_bwd else 0.0),
                 (f"optimizer-step temporaries ({wl.optimizer_impl} {wl.optimizer})",
                  0.0 if at_bwd else worst["opt_tmp"]),
                 (f"allocator slack ({wl.allocator_slack:.0%})", worst["slack"]), ("CUDA context", ctx)]
    max_mb = min(s["max_mb"] for s in stages.values())
    kind = _model_kind(spec)
    values = {
        "params": params,
        "forward_flops": fwd_flops, "backward_flops": bwd_flops, "recompute_flops": rec_flops,
        "step_flops": fwd_flops + bwd_flops + rec_flops,
        "forward_matmul_flops": fwd_mm, "backward_matmul_flops": bwd_mm,
        "model_flops": model_flops, "hardware_flops": hw_flops,
        "six_nd_flops": 6.0 * params * wl.batch * per_sample if kind == "token" else None,
        "weight_bytes": st["weight"], "gradient_bytes": st["grad"], "master_weight_bytes": st["master"],
        "optimizer_bytes": st["optimizer"], "activation_bytes": worst["act"],
        "zero3_working_bytes": zero3_ws,
        "activation_bytes_per_micro_batch": worst["act_mb"],
        "activation_bytes_per_layer": layer_act,
        "recompute_working_bytes": working,
        "backward_working_bytes": worst["ws"], "backward_working_op": worst["ws_at"] or None,
        "optimizer_temp_bytes": worst["opt_tmp"], "memory_peak_phase": worst["phase"],
        "forward_backward_peak_bytes": worst["fb"], "optimizer_step_peak_bytes": worst["ob"],
        "pipeline_in_flight": worst["inflight"],
        "memory_stage": where,
        "memory_by_stage": {k: s["total"] for k, s in stages.items()},
        "params_per_device": worst["params"],
        "kv_cache_bytes": 0.0,
        "overhead_bytes": worst["slack"] + ctx,
        "total_memory_bytes": worst["total"], "memory_capacity_bytes": cap, "fits": worst["total"] <= cap,
        "memory_headroom_bytes": cap - worst["total"],
        "max_batch": max_mb * dp * m if max_mb else 0, "max_micro_batch": max_mb,
        "forward_time_s": slow["fwd"] * m, "backward_time_s": slow["bwd"] * m, "recompute_time_s": slow["rec"] * m,
        "optimizer_time_s": opt_time, "comm_time_s": cm["total_s"], "exposed_comm_time_s": cm["exposed_s"],
        "comm": cm["detail"], "bubble_time_s": bubble, "step_time_s": step_t,
        "mfu": mfu, "hfu": hfu,
        ("tokens_per_s" if kind == "token" else "samples_per_s"):
            samples_s * per_sample if kind == "token" else samples_s,
    }
    if kind == "token":
        values["samples_per_s"] = samples_s
    values.update(run)
    return values, mem_lines


def activation_bytes(costs: list[OpCost], r: Resolved, p: Precision, spec=None) -> dict:
    """Bytes saved for backward on one device for one micro-batch (whole depth,
    before dividing by pp), and the transient working set of recomputation.

    Per transformer layer at 16-bit (Korthikanti et al. 2022, Table 2), from the
    ops' own saved tensors (costmodel.ops), no fudge factor:
    * none: 34sbh + 5as^2b, plus the fp32 LayerNorm statistics (mean and rstd,
      2 norms x 2 x 4 bytes x sb = 16sb) that the paper leaves out;
    * selective: drop the seq x seq tensors of attention (sec. 5: 34sbh);
    * full: keep only each layer's input (2sbh per layer), plus one layer's
      full activations while it is recomputed (``working``);
    * tensor parallel: sbh(10 + 24/t + 5as/(ht)) (sec. 4.2.1), sequence
      parallel: sbh(34/t + 5as/(ht)) (sec. 4.2.2) -- heads and d_ff are split
      by the builder, the replicated tensors (norm inputs, dropout masks, the
      inputs of QKV and fc1) by ``_replicated``.
    """
    wl = r.wl
    P = _train_profile(r, costs, p)
    sp = wl.tp if (wl.sequence_parallel and wl.tp > 1) else 1
    acts = _seg_activations(P, wl.recompute, sp)
    working = (P["working_sp"] if sp > 1 else P["working"]) if wl.recompute == "full" else 0.0
    return {"per_micro": sum(acts.values()), "working": working}


def _replicated(c: OpCost) -> bool:
    o = c.op
    if o.kind in ("norm", "add"):
        return True
    if o.kind == "dropout" and not o.quadratic:
        return True
    if o.kind == "linear" and o.saved_bytes and c.path.endswith(("q_proj", "fc1", "gate_proj", "lm_head")):
        return True
    return False


def _intensity(costs: list[OpCost]) -> float:
    f = sum(c.count * (c.op.fwd_flops + c.op.bwd_flops) for c in costs)
    b = sum(c.count * (c.op.fwd_bytes + c.op.bwd_bytes) for c in costs)
    return f / b if b else 0.0


def _bound(costs: list[OpCost]) -> str:
    tc = sum(c.count * (c.fwd_time + c.bwd_time) for c in costs if c.bound == "compute")
    tm = sum(c.count * (c.fwd_time + c.bwd_time) for c in costs if c.bound == "memory")
    return "compute" if tc >= tm else "memory"


def kv_cache_bytes(spec: TransformerSpec, batch: int, ctx: int, act_bytes: int, src_len: int = 0) -> float:
    """2 (K and V) * layers * batch * kv_heads * d_head * context * bytes (MQA/GQA:
    kv_heads < heads; Shazeer 2019; Ainslie et al. 2023). Encoder-decoder: the
    decoder's self-attention cache plus the cross-attention K/V of the source."""
    from .memory import kv_cache_bytes as kv_bytes
    layers = spec.decoder_layers if spec.structure == "encoder-decoder" else spec.layers
    kv = kv_bytes(layers, batch, spec.n_kv_heads, spec.head_dim, ctx, act_bytes)
    if spec.structure == "encoder-decoder":
        kv += kv_bytes(layers, batch, spec.heads, spec.head_dim, src_len, act_bytes)
    return kv


def _inference(r: Resolved) -> Report:
    spec, hw, wl = r.spec, r.hw, r.wl
    p = Precision.of(r.precision)
    tp = wl.tp
    b = r.micro_batch
    tree = build(spec, _shape(r, b, training=False, tp=tp), p)
    full = tree if tp == 1 else build(spec, _shape(r, b, training=False, tp=1), p)
    costs = cost_ops(tree, hw, p)
    scale = wl.batch / b
    fwd_flops = scale * full.total("fwd_flops")
    fwd_mm = scale * full.total("matmul_flops")
    params = int(full.total("params"))
    fwd_t = sum(c.count * c.fwd_time for c in costs) / wl.pp
    dev_params = sum(c.count * c.op.params for c in costs) / wl.pp
    weight_b = dev_params * p.act_bytes if r.precision != "fp8" else dev_params
    values = {"params": params, "forward_flops": fwd_flops, "backward_flops": 0.0, "step_flops": fwd_flops,
              "forward_matmul_flops": fwd_mm, "backward_matmul_flops": 0.0,
              "weight_bytes": weight_b, "gradient_bytes": 0.0, "optimizer_bytes": 0.0}
    # working activations: the largest op's inputs + outputs (nothing is kept for backward).
    # A tied LM head reads the embedding table but owns no parameters: its weight
    # read is not activation memory either (checked by costmodel/validate).
    def _weights_read(o):
        if o.kind == "linear":
            return (o.dims["d_in"] * o.dims["d_out"] + (o.dims["d_out"] if o.dims.get("bias") else 0)) * p.weight_bytes
        return o.params * p.weight_bytes
    act = max((c.op.fwd_bytes - _weights_read(c.op) for c in costs), default=0.0)
    kv_b = 0.0
    decode_t = 0.0
    decode_costs = []
    if isinstance(spec, TransformerSpec) and spec.structure != "encoder" and spec.lm_head:
        ctx = r.seq + wl.gen_tokens if spec.structure == "decoder" else r.target_seq + wl.gen_tokens
        kv_b = kv_cache_bytes(spec, b, ctx, p.act_bytes, r.seq) / tp
        # prefill processes the prompt; then gen_tokens decode steps, each
        # attending over the growing cache (mean context used for the average step)
        mean_ctx = (r.seq if spec.structure == "decoder" else r.target_seq) + (wl.gen_tokens + 1) / 2
        dshape = Shape(batch=b, seq=r.seq, target_seq=r.target_seq, training=False, flash=wl.flash,
                       kv_len=max(1, int(round(mean_ctx))), tp=tp)
        dtree = build(spec, dshape, p)
        decode_costs = cost_ops(dtree, hw, p)
        # each step also reads the whole KV cache once
        kv_read = kv_b * (mean_ctx / ctx) if ctx else 0.0
        decode_t = sum(c.count * c.fwd_time for c in decode_costs) / wl.pp
        decode_t = max(decode_t, (dev_params * p.weight_bytes + kv_read) / (hw.memory.bandwidth * memory_efficiency(hw)))
        values["decode_flops_per_token"] = dtree.total("fwd_flops") * (1 if tp == 1 else tp) / b
    total_gen = fwd_t + wl.gen_tokens * decode_t
    slack = wl.allocator_slack * (weight_b + act + kv_b)
    total = weight_b + act + kv_b + slack + wl.cuda_context_bytes
    cap = hw.memory.capacity_bytes
    per_seq_kv = kv_b / b if b else 0
    per_seq_act = act / b if b else 0
    free = (cap - wl.cuda_context_bytes) / (1 + wl.allocator_slack) - weight_b
    max_b = int(free // (per_seq_kv + per_seq_act)) if (per_seq_kv + per_seq_act) > 0 and free > 0 else 0
    kind = _model_kind(spec)
    values.update({
        "activation_bytes": act, "kv_cache_bytes": kv_b, "overhead_bytes": slack + wl.cuda_context_bytes,
        "total_memory_bytes": total, "memory_capacity_bytes": cap, "fits": total <= cap,
        "memory_headroom_bytes": cap - total, "max_batch": max_b * r.dp,
        "forward_time_s": fwd_t, "prefill_time_s": fwd_t, "backward_time_s": 0.0,
        "decode_time_per_token_s": decode_t, "generation_time_s": total_gen,
        "step_time_s": total_gen if decode_t else fwd_t,
        "arithmetic_intensity": _intensity(costs), "bound": _bound(costs),
        "comm_time_s": 0.0, "bubble_time_s": 0.0,
    })
    if decode_t:
        values["tokens_per_s"] = wl.batch / decode_t
        values["prefill_tokens_per_s"] = wl.batch * r.seq / fwd_t if fwd_t else 0.0
        values["decode_bound"] = _bound(decode_costs)
    elif kind == "token":
        values["tokens_per_s"] = wl.batch * _units_per_sample(r) / fwd_t if fwd_t else 0.0
        values["samples_per_s"] = wl.batch / fwd_t if fwd_t else 0.0
    else:
        values["samples_per_s"] = wl.batch / fwd_t if fwd_t else 0.0
    values["mfu"] = fwd_flops / (fwd_t * r.gpus * hw.peak_flops(r.precision)) if fwd_t else 0.0
    mem_lines = [("weights", weight_b), ("KV cache", kv_b), ("activations (working set)", act),
                 (f"allocator slack ({wl.allocator_slack:.0%})", slack), ("CUDA context", wl.cuda_context_bytes)]
    rep = Report(spec.name, hw.name, _workload_dict(r), values, costs, tree, memory_lines=mem_lines)
    if r.explain:
        from .explain import explain_inference
        rep.explain = explain_inference(rep, r)
    return rep


def count_params(spec) -> int:
    """Exact parameter count of a spec (a batch-1 tree; tied weights once)."""
    spec = load_model(spec)
    seq = 1
    sh = Shape(batch=1, seq=seq, target_seq=seq if isinstance(spec, TransformerSpec) else 0,
               image=getattr(spec, "image_size", 0), training=False)
    return int(build(spec, sh, Precision.of("fp32")).total("params"))
