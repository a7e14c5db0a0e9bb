"""Layer 1 of validation: the engine against torch, exactly, on the CPU.

For one model spec and a small shape, build the same model in torch
(``torch_build``), run one training forward + backward, and compare:

* parameters            -- ``sum(p.numel())`` vs ``costmodel.count_params``;
* forward matmul FLOPs  -- ``torch.utils.flop_counter.FlopCounterMode`` vs
  the engine's ``forward_matmul_flops`` (FLOPs = 2 per multiply-accumulate);
* forward+backward      -- FlopCounterMode over forward and ``loss.backward()``
  vs ``forward_matmul_flops + backward_matmul_flops``;
* saved activations     -- the bytes autograd keeps for backward, seen through
  ``torch.autograd.graph.saved_tensors_hooks``: unique storages (by
  ``untyped_storage().data_ptr()``), parameters and buffers excluded -- vs the
  engine's ``activation_bytes_per_micro_batch`` (train, fp32, recompute none).

Every difference in saved bytes is either zero or a *known gap*: a formula
from the spec and the shape, with the reason (``known_gaps``). Nothing here
is fitted to a measurement.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

INDEX_BYTES = 8


@dataclass
class Gap:
    kind: str          # engine op kind the bytes belong to
    bytes: float
    why: str


@dataclass
class ExactResult:
    model: str
    shape: dict
    device: str
    params_torch: int
    params_engine: int
    fwd_flops_torch: int
    fwd_flops_engine: float
    fwdbwd_flops_torch: int
    fwdbwd_flops_engine: float
    saved_torch: float | None
    saved_engine: float
    counter_gap: float = 0.0          # FlopCounterMode's own miscount (see counter_gaps), fwd+bwd
    counter_notes: list = field(default_factory=list)
    saved_by_kind_torch: dict = field(default_factory=dict)
    saved_by_kind_engine: dict = field(default_factory=dict)
    gaps: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def explained(self) -> float:
        return sum(g.bytes for g in self.gaps)

    @property
    def unexplained(self) -> float | None:
        if self.saved_torch is None:
            return None
        return self.saved_torch - self.saved_engine - self.explained

    @property
    def ok(self) -> bool:
        return (self.params_torch == self.params_engine and self.fwd_flops_torch == self.fwd_flops_engine
                and self.fwdbwd_flops_torch == self.fwdbwd_flops_engine + self.counter_gap
                and (self.unexplained is None or self.unexplained == 0))

    def by_kind(self) -> list[dict]:
        """Per engine op kind: engine bytes, known gap, torch bytes, unexplained."""
        rows = []
        kinds = sorted(set(self.saved_by_kind_torch) | set(self.saved_by_kind_engine) | {g.kind for g in self.gaps})
        for k in kinds:
            e = self.saved_by_kind_engine.get(k, 0.0)
            g = sum(x.bytes for x in self.gaps if x.kind == k)
            t = self.saved_by_kind_torch.get(k, 0.0) if self.saved_torch is not None else None
            rows.append({"kind": k, "engine": e, "known_gap": g, "torch": t,
                         "unexplained": None if t is None else t - e - g})
        return rows

    def to_dict(self) -> dict:
        return {"model": self.model, "shape": self.shape, "device": self.device,
                "params": {"torch": self.params_torch, "engine": self.params_engine},
                "forward_matmul_flops": {"torch": self.fwd_flops_torch, "engine": self.fwd_flops_engine},
                "forward_backward_matmul_flops": {"torch": self.fwdbwd_flops_torch,
                                                  "engine": self.fwdbwd_flops_engine,
                                                  "flop_counter_gap": self.counter_gap,
                                                  "flop_counter_notes": self.counter_notes},
                "saved_bytes": {"torch": self.saved_torch, "engine": self.saved_engine,
                                "explained_gap": self.explained, "unexplained": self.unexplained},
                "saved_bytes_by_kind": self.by_kind(),
                "gaps": [g.__dict__ for g in self.gaps], "notes": self.notes, "ok": self.ok}


def engine_report(spec, *, batch: int, seq: int | None = None, target_seq: int | None = None,
                  image: int | None = None):
    """The engine in train mode, fp32, no recompute, no flash, no overheads."""
    from ..engine import estimate
    from ..catalog import load_hardware
    wl = dict(batch=batch, precision="fp32", mode="train", recompute="none", flash=False,
              cuda_context_bytes=0.0, allocator_slack=0.0)
    if seq:
        wl["seq"] = seq
    if target_seq:
        wl["target_seq"] = target_seq
    if image:
        wl["image"] = image
    return estimate(spec, load_hardware("cpu-host"), wl)


def known_gaps(spec, rep, device: str) -> list[Gap]:
    """Saved bytes that torch keeps and the engine, by design, does not model
    (or models for the GPU kernel), each from the spec and shape alone."""
    from ..specs.model import CNNSpec, RNNSpec, TransformerSpec
    gaps: list[Gap] = []
    a = 4   # fp32
    wl = rep.workload
    if isinstance(spec, TransformerSpec) and spec.position == "rotary":
        stacks = 2 if spec.structure == "encoder-decoder" else 1
        for i in range(stacks):
            s = wl["seq"] if (i == 0 and spec.structure != "decoder") or spec.structure == "decoder" else \
                (wl["target_seq"] or wl["seq"])
            rd = int(spec.head_dim * spec.rotary_fraction)
            gaps.append(Gap("rotary", 2 * s * rd * a,
                            f"rotary cos and sin tables (1 x {s} x {rd}, fp32), computed once per "
                            f"stack and kept by q*cos and q*sin; the engine's rotary op keeps nothing"))
    if device in ("cpu", "meta"):   # the meta device runs the same composite decomposition
        for c in rep.ops:
            o = c.op
            if o.kind == "norm" and o.dims.get("kind") == "rmsnorm":
                gaps.append(Gap("norm", c.count * o.dims["rows"] * o.dims["dim"] * a,
                                f"{c.path}: torch {_torch_version()} runs F.rms_norm on the {device} device as a composite "
                                f"(x * rsqrt(mean(x^2)) * w) that also keeps the normalised x for the weight "
                                f"gradient; the engine models the fused GPU kernel (input + fp32 rstd)"))
    if isinstance(spec, RNNSpec):
        gaps.extend(_rnn_gaps(spec, rep, device))
    if isinstance(spec, CNNSpec):
        for c in rep.ops:   # booking only (nets to zero): torch's only saver is the ReLU
            o = c.op
            if o.kind == "pool" and o.dims.get("h_out") == 1 and o.saved_bytes and "/after" in c.path:
                x = c.count * o.saved_bytes
                gaps.append(Gap("activation", x, f"{c.path}: the last block's in-place ReLU keeps its output, "
                                                 f"which the global average (torch: mean) does not save"))
                gaps.append(Gap("pool", -x, f"{c.path}: the engine books that ReLU output to the pool, its consumer"))
    return gaps


def _rnn_gaps(spec, rep, device) -> list[Gap]:
    """torch's CPU RNN against the engine's fused-cell model.

    The engine keeps, per step and direction, the layer input, h_{t-1} and the
    fused CUDA cell's workspace: d_in + h*(g + state) = LSTM d_in + 6h, GRU
    d_in + 4h, tanh RNN d_in + 2h. On the CPU, with oneDNN off so that
    FlopCounterMode sees the matmuls, torch runs the composite ATen cells
    (aten/src/ATen/native/RNN.cpp), which keep: the layer input once (the first
    layer: one seq-major copy per direction), and per step and direction
    LSTM: gates (4h, activated in place), c_{t-1}, tanh(c_t), h_{t-1} = 7h;
    GRU: input and hidden gate projections and their products = 7h;
    tanh RNN: its output h (= the next step's h_{t-1}) = 1h, plus h0."""
    if device not in ("cpu", "meta"):
        return []
    b, s = rep.workload["micro_batch"], rep.workload["seq"]
    h, dirs, a = spec.hidden_size, 2 if spec.bidirectional else 1, 4
    g = {"lstm": 4, "gru": 3, "rnn": 1}[spec.cell]
    state = {"lstm": 2, "gru": 1, "rnn": 1}[spec.cell]
    k = {"lstm": 7, "gru": 7, "rnn": 1}[spec.cell]
    gap = 0.0
    for layer in range(spec.layers):
        d_in = spec.input_size if layer == 0 else h * dirs
        engine = b * s * dirs * (d_in + h * (g + state))
        torch_ = ((dirs if layer == 0 else 1) * b * s * d_in + dirs * b * s * k * h
                  + (dirs * b * h if spec.cell == "rnn" else 0))
        gap += (torch_ - engine) * a
    return [Gap("rnn", gap, f"torch's CPU {spec.cell.upper()} runs the composite ATen cell: per step and direction "
                            f"it keeps {k}h ({'gates 4h, c_(t-1), tanh(c_t), h_(t-1)' if spec.cell == 'lstm' else 'gate projections and products' if spec.cell == 'gru' else 'the output h, plus h0'}), "
                            f"and the first layer's input once per direction; the engine models the fused GPU cell "
                            f"(d_in + {g + state}h per step and direction)")]


def flop_counter_ignores_conv_groups() -> bool:
    """True when torch's FlopCounterMode counts a grouped convolution's weight
    gradient as if groups were 1 (``conv_backward_flop`` never uses its
    ``_groups`` argument; fixed upstream by pytorch/pytorch PR #183405).
    Probed once, on the meta device, rather than assumed from a version."""
    global _GROUP_PROBE
    try:
        return _GROUP_PROBE
    except NameError:
        pass
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        conv = torch.nn.Conv2d(8, 8, 1, groups=4, bias=False)
        x = torch.randn(1, 8, 2, 2, requires_grad=True)
    with FlopCounterMode(display=False) as fc:
        y = conv(x)
        f = fc.get_total_flops()
        y.sum().backward()
    _GROUP_PROBE = (fc.get_total_flops() - f) != 2 * f
    return _GROUP_PROBE


def counter_gaps(rep) -> tuple[float, list[str]]:
    """FLOPs FlopCounterMode reports beyond the true count (its own bugs)."""
    extra, notes = 0.0, []
    if any(c.op.kind == "conv2d" and c.op.dims.get("groups", 1) > 1 for c in rep.ops) and \
            flop_counter_ignores_conv_groups():
        for c in rep.ops:
            g = c.op.dims.get("groups", 1)
            if c.op.kind == "conv2d" and g > 1:
                x = c.count * c.op.matmul_flops * (g - 1)
                extra += x
                notes.append(f"{c.path}: FlopCounterMode counts this groups={g} conv's weight gradient {g}x "
                             f"(+{x:,.0f} FLOPs): conv_backward_flop ignores groups (pytorch/pytorch PR #183405)")
    return extra, notes


def _torch_version() -> str:
    import torch
    return torch.__version__.split("+")[0]


def check(model, *, batch: int = 1, seq: int | None = None, target_seq: int | None = None,
          image: int | None = None, overrides: dict | None = None, device: str = "cpu",
          saved: bool = True) -> ExactResult:
    """Compare one model spec against its torch build. ``device='meta'`` runs
    models too large for the CPU: shapes, FLOPs and storage sizes without data
    (a storage is identified by its StorageImpl there, as meta storages have no
    data pointer)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..catalog import load_model
    from ..engine import _apply_overrides, count_params as engine_params, split_overrides
    from .torch_build import build_module, count_params, current_op

    spec = load_model(model)
    mo, _, _ = split_overrides({k if k.startswith(("model.", "hardware.", "workload.")) else f"model.{k}": v
                                for k, v in (overrides or {}).items()})
    spec = _apply_overrides(spec, mo, "model.")
    rep = engine_report(spec, batch=batch, seq=seq, target_seq=target_seq, image=image)
    wl = rep.workload
    torch.manual_seed(0)
    with torch.device(device):
        m = build_module(spec)
    m.train()
    res = ExactResult(model=spec.name, shape={"batch": batch, "seq": wl.get("seq"), "target_seq": wl.get("target_seq"),
                                              "image": wl.get("image"), **({"overrides": overrides} if overrides else {})},
                      device=device, params_torch=count_params(m), params_engine=engine_params(spec),
                      fwd_flops_torch=0, fwd_flops_engine=rep["forward_matmul_flops"],
                      fwdbwd_flops_torch=0,
                      fwdbwd_flops_engine=rep["forward_matmul_flops"] + rep["backward_matmul_flops"],
                      saved_torch=None, saved_engine=rep["activation_bytes_per_micro_batch"])
    for c in rep.ops:
        if c.op.saved_bytes:
            res.saved_by_kind_engine[c.op.kind] = res.saved_by_kind_engine.get(c.op.kind, 0.0) + c.count * c.op.saved_bytes
    inputs = m.make_inputs(batch, wl.get("seq") or 0, wl.get("target_seq") or 0, wl.get("image") or 0,
                           device=device)

    def key(t):
        st = t.untyped_storage()
        return st.data_ptr() if t.device.type != "meta" else st._cdata

    exclude = {key(p) for p in m.parameters()} | {key(b) for b in m.buffers()}
    storages: dict = {}     # storage key -> [bytes, [kinds that saved it]]

    def pack(t):
        k = key(t)
        if k not in exclude:
            ent = storages.setdefault(k, [t.untyped_storage().nbytes(), []])
            kind = current_op()
            if kind not in ent[1]:
                ent[1].append(kind)
        return t

    # The CPU's oneDNN (mkldnn) RNN kernel is opaque to FlopCounterMode (0 FLOPs);
    # the composite ATen cell is what the counter can see.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # oneDNN's TF32 notice, printed whenever its flags are set
        ctx = torch.backends.mkldnn.flags(enabled=False)
        ctx.__enter__()
    try:
        with FlopCounterMode(display=False) as fc:
            if saved:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    loss = m(**inputs)
            else:
                loss = m(**inputs)
            res.fwd_flops_torch = int(fc.get_total_flops())
            loss.backward()
            res.fwdbwd_flops_torch = int(fc.get_total_flops())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ctx.__exit__(None, None, None)
    res.counter_gap, res.counter_notes = counter_gaps(rep)
    if saved:
        res.saved_torch = float(sum(v[0] for v in storages.values()))
        for nbytes, kinds in storages.values():
            k = _owner(kinds)
            res.saved_by_kind_torch[k] = res.saved_by_kind_torch.get(k, 0.0) + nbytes
        res.gaps = known_gaps(spec, rep, device)
    return res


def _owner(kinds: list[str]) -> str:
    """The op a shared storage is booked to, the engine's convention: the first
    op that saves it, except that an activation which keeps its *output*
    (ReLU, tanh) shares it with the next op that saves the same tensor, and
    that consumer owns it (build.py: "in-place ReLU whose output the next
    conv/pool saves anyway")."""
    if len(kinds) > 1 and kinds[0] == "activation":
        return kinds[1]
    return kinds[0]


def small_case(spec) -> dict:
    """A shape (and, for big models, a layer override and the meta device)
    that checks ``spec`` in about a second: the same ops, fewer repeats."""
    from ..engine import _apply_overrides, count_params as engine_params
    from ..specs.model import CNNSpec, MLPSpec, RNNSpec, TransformerSpec, ViTSpec
    case: dict = {"overrides": {}}
    if isinstance(spec, TransformerSpec):
        case.update(batch=2, seq=32, target_seq=24 if spec.structure == "encoder-decoder" else None)
        if engine_params(spec) > 2e8:
            case["overrides"]["layers"] = 1
            if spec.structure == "encoder-decoder":
                case["overrides"]["decoder_layers"] = 1
    elif isinstance(spec, ViTSpec):
        case.update(batch=1)
        if engine_params(spec) > 2e8:
            case["overrides"]["layers"] = 1
    elif isinstance(spec, CNNSpec):
        case.update(batch=1, image=64)
    elif isinstance(spec, RNNSpec):
        case.update(batch=2, seq=8)
    elif isinstance(spec, MLPSpec):
        case.update(batch=4)
    small = _apply_overrides(spec, {k: v for k, v in case["overrides"].items()}, "model.")
    # real CPU tensors up to ~1.2 GB of fp32 weights (+ grads); beyond, the meta device
    case["device"] = "cpu" if engine_params(small) <= 3e8 else "meta"
    return case
