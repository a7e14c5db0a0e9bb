"""The roofline engine: a model spec + workload + hardware -> a cost report.

Per op (Williams et al. 2009, roofline; book 1.2.5, 7.6.2):
    time = max(FLOPs / (peak of the op's dtype and unit * efficiency),
               bytes / (HBM bandwidth * memory efficiency))
    arithmetic intensity = FLOPs / bytes; bound = compute if the FLOP term wins.
Training step (per device; Narayanan et al. 2021):
    step = accum * (forward + backward + recompute) / pp + optimizer
           + exposed communication + pipeline bubble
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import comm as commmod
from .build import Shape, build
from .catalog import load_hardware, load_model
from .errors import CostModelError, suggest
from .memory import optimizer_state_bytes, state_dtypes
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


def memory_efficiency(hw: Hardware) -> float:
    cal = hw.calibration
    if cal is not None and cal.memory_eff:
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
        tm = fb / mem_rate if fb else 0.0
        tf = max(tc, tm) + over
        bound_f = "compute" if tc >= tm else "memory"
        tc = bf_ / cb if bf_ else 0.0
        tm = bb_ / mem_rate if bb_ else 0.0
        tb = max(tc, tm) + (over if bf_ or bb_ else 0.0)
        out.append(OpCost(path, op, m, tf, tb, bound_f, "compute" if tc >= tm else "memory"))
    return out


# --- resolution --------------------------------------------------------------
def _apply_overrides(obj, overrides: dict[str, Any], prefix: str):
    """Return a copy of a pydantic object with dotted-path overrides applied."""
    if not overrides:
        return obj
    data = obj.model_dump(by_alias=True)
    for path, value in overrides.items():
        keys = path.split(".")
        cur = data
        cls = obj
        for i, k in enumerate(keys):
            if not isinstance(cur, dict) or (k not in cur and not _field_exists(cls, k)):
                valid = sorted(cur.keys()) if isinstance(cur, dict) else []
                where = prefix + ".".join(keys[:i]) if i else prefix.rstrip(".")
                raise CostModelError(f"no field {k!r} at {where or 'top level'}"
                                     f"{suggest(k, valid)} (valid fields: {', '.join(valid)})",
                                     field=prefix + path)
            if i == len(keys) - 1:
                cur[k] = value
            else:
                if cur.get(k) is None:
                    cur[k] = {}
                cur = cur[k]
                cls = None
    from pydantic import TypeAdapter, ValidationError
    try:
        if isinstance(obj, Hardware):
            return Hardware.model_validate(data)
        if isinstance(obj, Workload):
            return Workload.model_validate(data)
        from .specs.model import ModelSpec
        return TypeAdapter(ModelSpec).validate_python(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"] if x not in ("transformer", "vit", "cnn", "rnn", "mlp"))
        msg = err["msg"].replace("Value error, ", "")
        raise CostModelError(f"{msg} (got {err.get('input')!r})" if err["type"] != "value_error" else msg,
                             field=prefix + loc) from None


def _field_exists(cls, k):
    return cls is not None and hasattr(cls, "model_fields") and k in type(cls).model_fields


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
        have = ", ".join(hw.supported_dtypes())
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
            ctx = seq + wl.gen_tokens
            if spec.position == "learned" and ctx > spec.max_positions:
                raise CostModelError(f"prompt {seq} + gen_tokens {wl.gen_tokens} = {ctx} exceeds the model's "
                                     f"{spec.max_positions} positions (expected <= {spec.max_positions})",
                                     field="gen_tokens")
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
    # parallel degrees
    tp, pp = wl.tp, wl.pp
    if wl.gpus is not None and wl.dp is not None and wl.gpus != wl.dp * tp * pp:
        raise CostModelError(f"gpus {wl.gpus} != dp {wl.dp} x tp {tp} x pp {pp}", field="gpus")
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
            raise CostModelError(f"batch {wl.batch} is not divisible by dp {dp} x micro_batch {mb}",
                                 field="micro_batch")
    else:
        if wl.batch % dp:
            raise CostModelError(f"batch {wl.batch} is not divisible by dp {dp} (expected a multiple of {dp})",
                                 field="batch")
        mb = wl.batch // dp
    accum = wl.batch // (dp * mb)
    return Resolved(spec, hw, wl, prec, seq, target, image, gpus, dp, mb, accum)


def _check_model_parallel(spec, tp, pp):
    if isinstance(spec, TransformerSpec):
        if spec.heads % tp:
            raise CostModelError(f"tp {tp} does not divide heads {spec.heads}", field="tp")
        if spec.n_kv_heads % tp and tp % spec.n_kv_heads:
            raise CostModelError(f"tp {tp} does not divide kv_heads {spec.n_kv_heads}", field="tp")
        if spec.d_ff % tp:
            raise CostModelError(f"tp {tp} does not divide d_ff {spec.d_ff}", field="tp")
        layers = spec.layers + (spec.decoder_layers or 0 if spec.structure == "encoder-decoder" else 0)
        if layers % pp:
            raise CostModelError(f"pp {pp} does not divide the {layers} layers", field="pp")
    elif isinstance(spec, ViTSpec):
        if spec.heads % tp or spec.d_ff % tp:
            raise CostModelError(f"tp {tp} does not divide heads {spec.heads} and d_ff {spec.d_ff}", field="tp")
        if spec.layers % pp:
            raise CostModelError(f"pp {pp} does not divide the {spec.layers} layers", field="pp")
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
    if isinstance(workload, Workload):
        wl = workload
        if kw or wo:
            wl = Workload.model_validate({**wl.model_dump(), **kw, **wo})
    else:
        from pydantic import ValidationError
        try:
            wl = Workload.model_validate({**(workload or {}), **kw, **wo})
        except ValidationError as e:
            err = e.errors()[0]
            f = ".".join(str(x) for x in err["loc"])
            if err["type"] == "extra_forbidden":
                raise CostModelError(f"unknown workload field{suggest(f, Workload.model_fields)} "
                                     f"(valid: {', '.join(Workload.model_fields)})", field=f) from None
            raise CostModelError(f"{err['msg']} (got {err.get('input')!r})", field=f) from None
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
    spec, hw, wl = r.spec, r.hw, r.wl
    p = Precision.of(r.precision)
    tp, pp, dp = wl.tp, wl.pp, r.dp
    mb = r.micro_batch
    # per device, one micro-batch (heads / d_ff split by tp)
    dev_tree, costs, memo = _built(r, _shape(r, mb, training=True, tp=tp), p)
    if tp == 1:
        full_tree, full_memo = dev_tree, memo
    else:
        full_tree, _, full_memo = _built(r, _shape(r, mb, training=True, tp=1), p)
    sums = full_memo.get("train_sums")
    if sums is None:
        full_ops = full_memo["ops"] or _flatten(full_tree)
        sums = full_memo["train_sums"] = (
            full_ops, sum(m * o.fwd_flops for _, m, o in full_ops), sum(m * o.bwd_flops for _, m, o in full_ops),
            sum(m * o.matmul_flops for _, m, o in full_ops), sum(m * o.bwd_matmul_flops for _, m, o in full_ops),
            int(sum(m * o.params for _, m, o in full_ops)))
    full_ops = sums[0]

    # --- model-level FLOPs for the whole global batch (all devices) -------------
    scale = wl.batch / mb                         # micro-batch tree -> global batch
    fwd_flops = scale * sums[1]
    bwd_flops = scale * sums[2]
    fwd_mm = scale * sums[3]
    bwd_mm = scale * sums[4]
    params = sums[5]
    shapes = [s for _, m, o in full_ops for _ in range(m) for s in o.param_shapes] if wl.optimizer == "adafactor" else None

    # recompute (per device, per micro-batch, whole model depth)
    rec = memo.get(("recompute", wl.recompute))
    if rec is None:
        quad = [c for c in costs if c.op.quadratic]
        if wl.recompute == "full":     # re-run every block's forward (Chen et al. 2016; Korthikanti sec. 5)
            rec_costs = [c for c in costs if "/layer" in c.path or "/block" in c.path]
        elif wl.recompute == "selective":   # re-run only the attention core (Korthikanti et al. 2022)
            rec_costs = [] if wl.flash else quad
        else:
            rec_costs = []
        rec = memo[("recompute", wl.recompute)] = (sum(c.count * c.op.fwd_flops for c in rec_costs),
                                                   sum(c.count * c.fwd_time for c in rec_costs))
    rec_flops_dev = rec[0]
    rec_time = rec[1] / pp
    rec_flops = rec_flops_dev * (tp if tp > 1 else 1) * wl.batch / mb / 1  # model-level (approx: tp-split)

    # --- time per device per step -------------------------------------------
    dev_sums = memo.get("dev_sums")
    if dev_sums is None:
        dev_sums = memo["dev_sums"] = (sum(c.count * c.fwd_time for c in costs),
                                       sum(c.count * c.bwd_time for c in costs),
                                       sum(c.count * c.op.params for c in costs),
                                       _intensity(costs), _bound(costs))
    fwd_t = dev_sums[0] / pp
    bwd_t = dev_sums[1] / pp
    m_acc = r.accum
    dtypes = state_dtypes(r.precision, wl.master_weights, wl.fp32_grads)
    dev_params = dev_sums[2] / pp
    # optimizer step: memory-bound update reading/writing every state once (sharded under ZeRO>=1)
    opt_state = (optimizer_state_bytes(wl.optimizer, shapes, dtypes["state"]) * (dev_params / params if params else 0)
                 if shapes is not None else
                 optimizer_state_bytes(wl.optimizer, [(1,)], dtypes["state"]) * dev_params)
    shard_opt = dp if wl.zero >= 1 else 1
    opt_bytes_moved = (dev_params * (2 * (dtypes["master"] or dtypes["weight"]) + dtypes["grad"]
                                     + (dtypes["weight"] if dtypes["master"] else 0)) + 2 * opt_state) / shard_opt
    opt_time = opt_bytes_moved / (hw.memory.bandwidth * memory_efficiency(hw))
    compute_t = m_acc * (fwd_t + bwd_t + rec_time)

    # --- communication (comm.py) ---------------------------------------------
    cm = commmod.step_comm(r, spec, p, dev_params, dtypes, costs, bwd_t * m_acc)
    bubble = (pp - 1) / (m_acc * wl.interleave) * compute_t if pp > 1 else 0.0
    step_t = compute_t + opt_time + cm["exposed_s"] + bubble

    # --- memory ledger per device ---------------------------------------------
    wshard = dp if wl.zero >= 3 else 1
    gshard = dp if wl.zero >= 2 else 1
    weight_b = dev_params * dtypes["weight"] / wshard
    grad_b = dev_params * dtypes["grad"] / gshard
    master_b = dev_params * dtypes["master"] / shard_opt
    optim_b = opt_state / shard_opt
    akey = ("activations", wl.recompute, wl.sequence_parallel, wl.tp)
    act_b = memo.get(akey)
    if act_b is None:
        act_b = memo[akey] = activation_bytes(costs, r, p, spec)
    inflight = min(pp, m_acc) if pp > 1 else 1
    act_dev = act_b["per_micro"] / pp * inflight + act_b["working"]
    if wl.sequence_parallel and tp > 1:
        act_dev = act_dev  # already applied per op in activation_bytes
    states = weight_b + grad_b + master_b + optim_b
    slack = wl.allocator_slack * (states + act_dev)
    total = states + act_dev + slack + wl.cuda_context_bytes
    cap = hw.memory.capacity_bytes
    per_sample_act = act_b["per_micro"] / pp * inflight / mb if mb else 0
    free_for_act = (cap - wl.cuda_context_bytes) / (1 + wl.allocator_slack) - states - act_b["working"]
    max_mb = int(free_for_act // per_sample_act) if per_sample_act > 0 and free_for_act > 0 else 0

    # --- throughput, MFU, run -------------------------------------------------
    per_sample = _units_per_sample(r)
    samples_s = wl.batch / step_t if step_t > 0 else 0.0
    peak = hw.peak_flops(r.precision)
    model_flops = fwd_flops + bwd_flops
    mfu = model_flops / (step_t * r.gpus * peak) if step_t > 0 else 0.0
    hfu = (model_flops + rec_flops) / (step_t * r.gpus * peak) if step_t > 0 else 0.0
    run = commmod.run_totals(r, step_t, samples_s * per_sample, model_flops, params)

    mem_lines = [("weights", weight_b), ("gradients", grad_b), ("master weights (fp32)", master_b),
                 (f"optimizer states ({wl.optimizer})", optim_b), ("activations", act_dev),
                 (f"allocator slack ({wl.allocator_slack:.0%})", slack), ("CUDA context", wl.cuda_context_bytes)]
    values = {
        "params": params,
        "forward_flops": fwd_flops, "backward_flops": bwd_flops, "recompute_flops": rec_flops,
        "step_flops": fwd_flops + bwd_flops + rec_flops,
        "forward_matmul_flops": fwd_mm, "backward_matmul_flops": bwd_mm,
        "six_nd_flops": 6.0 * params * wl.batch * per_sample if _model_kind(spec) == "token" else None,
        "weight_bytes": weight_b, "gradient_bytes": grad_b, "master_weight_bytes": master_b,
        "optimizer_bytes": optim_b, "activation_bytes": act_dev,
        "activation_bytes_per_micro_batch": act_b["per_micro"] / pp,
        "kv_cache_bytes": 0.0,
        "overhead_bytes": slack + wl.cuda_context_bytes,
        "total_memory_bytes": total, "memory_capacity_bytes": cap, "fits": total <= cap,
        "memory_headroom_bytes": cap - total, "max_batch": max_mb * r.dp * m_acc if max_mb else 0,
        "max_micro_batch": max_mb,
        "forward_time_s": fwd_t * m_acc, "backward_time_s": bwd_t * m_acc, "recompute_time_s": rec_time * m_acc,
        "optimizer_time_s": opt_time, "comm_time_s": cm["total_s"], "exposed_comm_time_s": cm["exposed_s"],
        "comm": cm["detail"], "bubble_time_s": bubble, "step_time_s": step_t,
        "arithmetic_intensity": dev_sums[3], "bound": dev_sums[4],
        "mfu": mfu, "hfu": hfu,
        ("tokens_per_s" if _model_kind(spec) == "token" else "samples_per_s"):
            samples_s * per_sample if _model_kind(spec) == "token" else samples_s,
    }
    if _model_kind(spec) == "token":
        values["samples_per_s"] = samples_s
    values.update(run)
    rep = Report(spec.name, hw.name, _workload_dict(r), values, costs, dev_tree, memory_lines=mem_lines)
    if r.explain:
        from .explain import explain_train
        rep.explain = explain_train(rep, r)
    return rep


def activation_bytes(costs: list[OpCost], r: Resolved, p: Precision, spec) -> dict:
    """Bytes saved for backward on one device for one micro-batch (whole depth,
    before dividing by pp), and the transient working set of recomputation.

    * none: every op's saved tensors (Korthikanti et al. 2022, sec. 4.1: 34sbh + 5as^2b per layer).
    * selective: drop the seq x seq tensors of attention (sec. 5: 34sbh).
    * full: keep only each layer's input (2sbh per layer), plus one layer's
      full activations while it is recomputed.
    * sequence_parallel: tensors replicated across the TP group are split too
      (sec. 4.2.2: sbh(34/t + 5as/(ht))).
    """
    wl = r.wl
    tp = wl.tp
    total = 0.0
    per_layer_full = {}
    layer_inputs = 0.0
    for c in costs:
        sb = c.op.saved_bytes
        if wl.sequence_parallel and tp > 1 and _replicated(c):
            sb /= tp
        if wl.recompute == "selective" and c.op.quadratic and not wl.flash:
            sb = 0.0
        in_layer = "/layer" in c.path or "/block" in c.path
        if wl.recompute == "full" and in_layer:
            key = c.path.rsplit("/", 1)[0]
            per_layer_full[key] = per_layer_full.get(key, 0.0) + sb
            continue
        total += c.count * sb
    working = 0.0
    if wl.recompute == "full":
        # each layer keeps its input (the residual stream), b*s*d activations
        for c in costs:
            if c.op.kind == "norm" and ("/layer" in c.path) and c.path.endswith(("attn.norm", "ffn.norm")):
                pass
        for key, v in per_layer_full.items():
            count = max((c.count for c in costs if c.path.startswith(key + "/")), default=1)
            first = next((c for c in costs if c.path.startswith(key + "/")), None)
            inp = 0.0
            if first is not None:
                d = first.op.dims
                if first.op.kind == "norm":
                    inp = d["rows"] * d["dim"] * p.act_bytes
                elif first.op.kind == "linear":
                    inp = d["tokens"] * d["d_in"] * p.act_bytes
                elif first.op.kind == "conv2d":
                    inp = d["n"] * d["c_in"] * d["h"] * d["w"] * p.act_bytes
            if wl.sequence_parallel and tp > 1:
                inp /= tp
            total += count * inp
            working = max(working, v)
    return {"per_micro": total, "working": working}


def _replicated(c: OpCost) -> bool:
    o = c.op
    if o.kind in ("norm", "add"):
        return True
    if o.kind == "dropout" and not o.quadratic:
        return True
    if o.kind == "linear" and o.saved_bytes and c.path.endswith(("q_proj", "fc1", "gate_proj")):
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
    layers = spec.decoder_layers if spec.structure == "encoder-decoder" else spec.layers
    kv = 2.0 * layers * batch * spec.n_kv_heads * spec.head_dim * ctx * act_bytes
    if spec.structure == "encoder-decoder":
        kv += 2.0 * layers * batch * spec.heads * spec.head_dim * src_len * act_bytes
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
    # working activations: the largest op's inputs + outputs (nothing is kept for backward)
    act = max((c.op.fwd_bytes - c.op.params * p.weight_bytes for c in costs), default=0.0)
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
