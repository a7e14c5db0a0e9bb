"""The batch fast path (costmodel/fastpath.py) changes no number.

A sweep over batch / micro-batch evaluates op quantities as affine functions
of the batch instead of building each tree. Every test here compares its
reports against the engine with the fast path switched off (every tree built
afresh, the code path of every estimate before the fast path existed): every
report value, every op row, the tree, the memory ledger and the explanation
must be equal in type and value -- no tolerance.
"""
import copy
import math
import pickle

import pytest

from costmodel import engine as E
from costmodel import fastpath as FP
from costmodel.catalog import load_hardware, load_model, model_names
from costmodel.specs.model import CNNSpec, RNNSpec, TransformerSpec
from costmodel.whatif import evaluate, from_dict, lookup
from costmodel.workload import Workload


# --- strict comparison (independent of fastpath.same) -------------------------------
def diff(a, b, where="") -> str | None:
    """The first place where a and b differ in type or value, or None."""
    if type(a) is not type(b):
        return f"{where}: type {type(a).__name__} != {type(b).__name__} ({a!r} vs {b!r})"
    if isinstance(a, float):
        same = a == b and math.copysign(1, a) == math.copysign(1, b) or (math.isnan(a) and math.isnan(b))
        return None if same else f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            d = diff(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{where}: {a!r} != {b!r}"


def skeleton(node):
    return (node.name, node.level, node.count,
            tuple(skeleton(c) if hasattr(c, "children") else c.name for c in node.children))


def assert_identical(got, want, case):
    """Every value, op row (with the op's dims), ledger line, explanation and the tree."""
    for what, a, b in (("values", got.values, want.values), ("workload", got.workload, want.workload),
                       ("memory", got.memory_lines, want.memory_lines), ("explain", got.explain, want.explain),
                       ("ops", [E.op_row(c) for c in got.ops], [E.op_row(c) for c in want.ops]),
                       ("dims", [c.op.dims for c in got.ops], [c.op.dims for c in want.ops]),
                       ("bounds", [c.bwd_bound for c in got.ops], [c.bwd_bound for c in want.ops])):
        d = diff(a, b, what)
        assert d is None, f"{case}: {d}"
    assert skeleton(got.tree) == skeleton(want.tree), case
    assert got.tree.parents() == want.tree.parents(), case


@pytest.fixture
def built(monkeypatch):
    """The reference: estimate_resolved with the fast path off (builds every tree)."""
    def ref(spec, hw, wl, explain=False):
        with monkeypatch.context() as m:
            m.setattr(FP, "train_fast", lambda r: None)
            return E.estimate_resolved(spec, hw, wl, explain=explain)
    return ref


def is_fast(rep) -> bool:
    """A fast-path report: its ops and tree are not made yet."""
    return "_load" in rep.__dict__


def tiny(spec) -> dict:
    if isinstance(spec, TransformerSpec):
        return {"seq": 32}
    if isinstance(spec, RNNSpec):
        return {"seq": 8}
    if isinstance(spec, CNNSpec):
        return {"image": 64}
    return {}


def tp_degrees(spec) -> list[int]:
    if not isinstance(spec, TransformerSpec):
        return [1]
    ok = [t for t in (2, 4) if spec.heads % t == 0 and spec.d_ff % t == 0
          and (spec.n_kv_heads % t == 0 or t % spec.n_kv_heads == 0)]
    return [1] + ok[:1]


# --- every shipped model ---------------------------------------------------------
@pytest.mark.parametrize("name", sorted(model_names()))
def test_every_shipped_model_matches_a_fresh_build(name, built):
    """A sweep's cases (one shared cache, as costmodel.whatif.evaluate) at tiny shapes: micro-batches
    1..64, recompute none / selective / full, flash on and off, tensor parallelism, and a calibrated
    host (efficiency curves and launch overhead: the general roofline loop)."""
    spec = load_model(name)
    base = tiny(spec)
    cache: dict = {}
    n_fast = n = 0
    modes = ("none", "selective", "full")
    for hw_name, prec, mbs in (("a100-80gb", "bf16", (1, 3, 8, 64)), ("cpu-host", "fp32", (2, 1, 5))):
        hw = load_hardware(hw_name)
        for tp in tp_degrees(spec):
            for flash in ((False, True) if isinstance(spec, TransformerSpec) else (False,)):
                for i, mb in enumerate(mbs):
                    wl = Workload.model_validate(dict(base, batch=2 * mb, micro_batch=mb, tp=tp, gpus=2 * tp,
                                                      flash=flash, recompute=modes[i % 3], precision=prec,
                                                      sequence_parallel=tp > 1, zero=i % 4))
                    case = f"{name} {hw_name} tp={tp} flash={flash} mb={mb}"
                    got = E.estimate_resolved(spec, hw, wl, cache=cache, explain=False)
                    n_fast += is_fast(got)
                    n += 1
                    assert_identical(got, built(spec, hw, wl), case)
    # each (hardware, tp, flash) group builds its first micro-batch, the rest come from the affine
    # model -- through the plan's own roofline loop and sums (fast_ok: they passed its self-check)
    assert n_fast >= n // 2, f"{name}: only {n_fast} of {n} cases took the fast path"
    plans = [e.plan for k, e in cache.items() if k[0] == "fastpath"]
    assert plans and all(pl and pl.fast_ok for pl in plans), (
        f"{name}: a plan failed its self-check against engine.cost_ops / _train_profile / _model_profile "
        f"(did their arithmetic change? mirror it in costmodel/fastpath.py); results stay right, sweeps slow")


# --- the public estimate() (no caller cache: content-keyed module memo) -------------
@pytest.mark.parametrize("name", ["gpt2", "resnet18", "t5-small", "bilstm-512"])
def test_estimate_calls_match_a_fresh_build(name, built, monkeypatch):
    """The public estimate() (names, explanations, no caller cache): from the second call of a
    (model, hardware, shape) on, the module-level plan answers -- the same micro-batch again too."""
    monkeypatch.setattr(FP, "_entries", FP.OrderedDict())
    spec = load_model(name)
    hw = load_hardware("a100-80gb")
    fast = []
    real = FP.Plan.profiles
    monkeypatch.setattr(FP.Plan, "profiles", lambda self, *a, **k: fast.append(1) or real(self, *a, **k))
    for mb in (4, 4, 1, 7, 4):
        kw = dict(tiny(spec), batch=mb * 2, micro_batch=mb, gpus=2)
        got = E.estimate(name, "a100-80gb", kw)
        want = built(spec, hw, Workload.model_validate(kw), explain=True)
        assert_identical(got, want, f"{name} mb={mb}")
    assert len(fast) == 4


def test_estimate_resolved_without_cache_is_lazy(built):
    """Without a cache, the second call of the same (model, hardware, shape) comes from the plan:
    its report makes its ops and tree only when read (explain=False keeps it so)."""
    spec, hw = load_model("gpt2"), load_hardware("h100-sxm")
    fast = []
    for mb in (3, 5, 6):
        wl = Workload.model_validate({"seq": 64, "batch": mb, "micro_batch": mb})
        got = E.estimate_resolved(spec, hw, wl, explain=False)
        fast.append(is_fast(got))
        assert_identical(got, built(spec, hw, wl), f"mb={mb}")
    assert fast == [False, True, True]


# --- the ranges: affine sums, ordered sums past 2^53, a build past the exact ops ---
@pytest.mark.parametrize("name,tp,seq", [("gpt3-175b", 8, 2048), ("palm-540b", 1, 2048), ("gpt2", 3, 1024),
                                         ("llama-2-7b", 1, 4096)])
def test_large_batches_in_every_regime(name, tp, seq, built):
    """Micro-batches across the plan's ranges: FLOP / byte sums exact as affine functions
    (b <= blim1), summed term by term in the engine's order past 2^53 (blim1 < b <= blim), and a
    real build past the range where op values are exact integers (b > blim). tp = 3 splits the
    vocabulary three ways: the loss's saved bytes / 3 are not dyadic, summed in order."""
    spec, hw = load_model(name), load_hardware("a100-80gb")
    cache: dict = {}

    def run(mb):
        wl = Workload.model_validate({"seq": seq, "batch": mb, "micro_batch": mb, "tp": tp, "gpus": tp,
                                      "sequence_parallel": tp > 1})
        got = E.estimate_resolved(spec, hw, wl, cache=cache, explain=False)
        fast = is_fast(got)
        assert_identical(got, built(spec, hw, wl), f"{name} tp={tp} mb={mb}")
        return fast

    run(1)
    run(2)
    plan = next(e.plan for k, e in cache.items() if k[0] == "fastpath")
    assert plan and plan.fast_ok
    blim1, blim = plan.blim1, plan.blim
    assert blim1 < blim < 10 ** 6
    mbs = {3, max(1, blim1), blim1 + 1, (blim1 + blim) // 2, blim, blim + 1}
    for mb in sorted(m for m in mbs if m >= 1):
        assert run(mb) == (mb <= blim), mb


# --- the guard: no affine model, no fast path -------------------------------------------
def test_family_rejects_a_quantity_that_is_not_affine(monkeypatch, built):
    """If any op quantity had a b^2 term (or the tree changed with the batch), the rebuild at
    b = 3 would differ from the affine prediction: the family is refused and every estimate is
    built as before."""
    spec, hw = load_model("gpt2"), load_hardware("a100-80gb")
    real_build = FP.build

    def squared(spec_, shape, p):
        tree = real_build(spec_, shape, p)
        op = E._flatten(tree)[0][2]
        op.bwd_bytes += shape.batch * shape.batch        # not affine in the batch
        return tree

    monkeypatch.setattr(FP, "build", squared)
    wl = Workload.model_validate({"seq": 64})
    r = E.resolve(spec, hw, wl)
    p = FP.Precision.of(r.precision)
    assert not FP.Family(spec, E._shape(r, 1, training=True), p).ok

    def extra_op(spec_, shape, p):
        tree = real_build(spec_, shape, p)
        if shape.batch > 2:
            tree.children.append(tree.children[-1])
        return tree

    monkeypatch.setattr(FP, "build", extra_op)
    assert not FP.Family(spec, E._shape(r, 1, training=True), p).ok
    monkeypatch.setattr(FP, "build", squared)
    cache: dict = {}
    for mb in (1, 2, 3, 9):
        wl = Workload.model_validate({"seq": 64, "batch": mb})
        got = E.estimate_resolved(spec, hw, wl, cache=cache, explain=False)
        assert not is_fast(got)
        assert_identical(got, built(spec, hw, wl), f"mb={mb}")


def test_family_predicts_every_op_field():
    """The affine model reproduces a real build field by field (types included) at batches it
    never saw: 7 and 1000."""
    spec = load_model("t5-small")
    wl = Workload.model_validate({"seq": 50})
    r = E.resolve(spec, load_hardware("a100-80gb"), wl)
    p = FP.Precision.of(r.precision)
    shape = E._shape(r, 1, training=True)
    fam = FP.Family(spec, shape, p)
    assert fam.ok and not fam.integral        # t5-small: a cross-attention k_proj saves seq*d*2/6 bytes
    from dataclasses import replace
    for b in (7, 1000):
        real = E._flatten(FP.build(spec, replace(shape, batch=b), p))
        mine = fam.ops_at(b)
        assert [(x, m) for x, m, _ in real] == [(x, m) for x, m, _ in mine]
        for (path, _, o), (_, _, q) in zip(real, mine):
            d = diff(o.__dict__, q.__dict__, path)
            assert d is None, d


# --- what-if sweeps end to end, and lazy reports -----------------------------------------
def test_whatif_batch_sweep_matches_single_estimates(built):
    w = from_dict({"model": "bert-base", "hardware": "a100-80gb", "workload": {"seq": 64, "tokens": 1e8},
                   "sweep": {"batch": [8, 16, 24, 40], "micro_batch": [1, 2, 4, 8]}})
    cases = evaluate(w)
    assert sum(is_fast(c.report) for c in cases if c.ok) >= 8
    spec, hw = load_model("bert-base"), load_hardware("a100-80gb")
    for c in cases:
        wl = Workload.model_validate({"seq": 64, "tokens": 1e8, **c.assign})
        want = built(spec, hw, wl)
        assert lookup(c, "time:*attn.scores|*attn.values") == sum(
            x.count * (x.fwd_time + x.bwd_time) for x in want.ops if x.path.endswith(("scores", "values")))
        assert_identical(c.report, want, str(c.assign))


def test_lazy_report_is_a_whole_report(built):
    spec, hw = load_model("vit-b16"), load_hardware("a100-80gb")
    cache: dict = {}
    for mb in (1, 2, 3):
        wl = Workload.model_validate({"batch": mb})
        rep = E.estimate_resolved(spec, hw, wl, cache=cache, explain=False)
    assert is_fast(rep)
    d = rep.to_dict(ops=False)
    assert is_fast(rep) and "ops" not in d            # values alone do not build the ops
    again = pickle.loads(pickle.dumps(rep))           # pickling makes them first
    assert not is_fast(rep) and type(again) is E.Report
    want = built(spec, hw, wl)
    for r in (rep, again, copy.deepcopy(rep)):
        assert_identical(r, want, "vit-b16 mb=3")
    assert rep == want
    with pytest.raises(AttributeError):
        rep.no_such_field


def test_memory_stays_bounded(monkeypatch):
    """Module-level entries (estimate() without a cache) and per-plan results are LRU-bounded."""
    monkeypatch.setattr(FP, "_entries", FP.OrderedDict())
    monkeypatch.setattr(FP, "ENTRIES", 3)
    monkeypatch.setattr(FP, "MEMO", 4)
    for seq in (16, 24, 32, 40, 48):
        for mb in range(1, 9):
            E.estimate("gpt2", "a100-80gb", seq=seq, batch=mb)
    assert len(FP._entries) == 3
    assert all(len(e.plan.memo) <= 4 for e in FP._entries.values() if e.plan)
