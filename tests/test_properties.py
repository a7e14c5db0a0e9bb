"""Invariants of the engine over random valid specs and workloads (hypothesis).

Each property is a law the analytical model must obey for *every* spec, not a
number checked against a reference:
* FLOPs are linear in the batch, and so are activation bytes up to the few tensors
  saved once per batch (BatchNorm statistics, position / bucket ids, the loss scalar);
* attention score terms (ops marked quadratic) grow as seq^2, every other op is
  affine in seq (a + b*seq: pooler/classifier heads read one token);
* backward FLOPs >= forward FLOPs;
* parameters do not depend on batch or sequence;
* per-device memory never grows as ZeRO-3 data-parallel devices are added (apart from
  the gather working set that appears at dp = 2, see below);
* no time is below FLOPs / peak or bytes / bandwidth (per op and in total);
* every report survives a JSON round trip, and every spec a YAML round trip.
"""
import json
import math
import os

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from costmodel import render
from costmodel.cli import main
from costmodel.catalog import cnn_shape_problem, load_hardware, parse_model
from costmodel.engine import count_params, estimate
from costmodel.specs.model import (Biases, CNNSpec, MLPSpec, RNNSpec, TransformerSpec)
from costmodel.yamlio import loads

# 30 examples per property keeps this file well under 60 s; COSTMODEL_PROPERTY_EXAMPLES=500 digs deeper
FAST = settings(max_examples=int(os.environ.get("COSTMODEL_PROPERTY_EXAMPLES", "30")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
HARDWARE = ["a100-80gb", "v100-16gb", "tpu-v4", "h100-sxm"]
REL = 1e-9


def close(a, b, rel=REL):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


# --- strategies -------------------------------------------------------------------
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@st.composite
def transformer_specs(draw):
    heads = draw(st.integers(1, 4))
    structure = draw(st.sampled_from(["encoder", "decoder", "encoder-decoder"]))
    pooler = structure == "encoder" and draw(st.booleans())
    return TransformerSpec(
        name=draw(names), arch="transformer", structure=structure,
        description=draw(st.text(max_size=20)),
        layers=draw(st.integers(1, 3)),
        decoder_layers=draw(st.integers(1, 2)) if structure == "encoder-decoder" else None,
        d_model=heads * draw(st.sampled_from([2, 4, 8])), heads=heads,
        kv_heads=draw(st.sampled_from([k for k in range(1, heads + 1) if heads % k == 0])),
        d_ff=draw(st.integers(1, 48)), vocab_size=draw(st.integers(2, 300)),
        max_positions=draw(st.integers(96, 160)),
        position=draw(st.sampled_from(["learned", "sinusoidal", "relative_bias", "rotary", "none"])),
        token_types=draw(st.integers(0, 2)), embedding_norm=draw(st.booleans()),
        norm=draw(st.sampled_from(["layernorm", "rmsnorm"])), norm_bias=draw(st.booleans()),
        norm_position=draw(st.sampled_from(["pre", "post"])), final_norm=draw(st.booleans()),
        activation=draw(st.sampled_from(["relu", "gelu", "gelu_new", "silu", "swiglu", "geglu"])),
        biases=Biases(qkv=draw(st.booleans()), attn_out=draw(st.booleans()), ffn=draw(st.booleans()),
                      lm_head=draw(st.booleans())),
        tied_embeddings=draw(st.booleans()), lm_head=draw(st.booleans()),
        pooler=pooler, num_classes=draw(st.integers(0, 3)) if structure == "encoder" else 0,
        dropout=draw(st.sampled_from([0.0, 0.1])))


@st.composite
def cnn_specs(draw):
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            layers.append({"type": "conv", "out": draw(st.integers(1, 8)), "kernel": draw(st.integers(1, 3)),
                           "stride": draw(st.integers(1, 2)), "padding": draw(st.integers(0, 1)),
                           "bias": draw(st.booleans())})
            if draw(st.booleans()):
                layers.append({"type": "bn"})
            layers.append({"type": draw(st.sampled_from(["relu", "gelu", "silu", "tanh", "sigmoid"]))})
        else:
            layers.append({"type": "resnet_stage", "block": draw(st.sampled_from(["basic", "bottleneck"])),
                           "planes": draw(st.integers(1, 4)), "blocks": draw(st.integers(1, 2)),
                           "stride": draw(st.integers(1, 2))})
        if draw(st.booleans()):
            layers.append({"type": draw(st.sampled_from(["maxpool", "avgpool"])), "kernel": 2})
    layers.append({"type": draw(st.sampled_from(["adaptive_avgpool", "adaptive_maxpool"])),
                   "output": draw(st.integers(1, 2))})
    layers.append({"type": "flatten"})
    if draw(st.booleans()):
        layers += [{"type": "linear", "out": draw(st.integers(1, 16))}, {"type": "relu"},
                   {"type": "dropout", "p": 0.5}]
    layers.append({"type": "linear", "out": draw(st.integers(1, 10))})
    spec = CNNSpec(name=draw(names), arch="cnn", image_size=draw(st.integers(8, 24)),
                   channels=draw(st.integers(1, 3)), layers=layers)
    assume(cnn_shape_problem(spec, spec.image_size) is None)
    return spec


@st.composite
def rnn_specs(draw):
    return RNNSpec(name=draw(names), arch="rnn", cell=draw(st.sampled_from(["lstm", "gru", "rnn"])),
                   input_size=draw(st.integers(1, 16)), hidden_size=draw(st.integers(1, 16)),
                   layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()), bias=draw(st.booleans()),
                   vocab_size=draw(st.sampled_from([0, 50])), num_classes=draw(st.integers(0, 3)))


@st.composite
def mlp_specs(draw):
    return MLPSpec(name=draw(names), arch="mlp", input_size=draw(st.integers(1, 32)),
                   hidden=draw(st.lists(st.integers(1, 32), max_size=3)), output_size=draw(st.integers(1, 8)),
                   activation=draw(st.sampled_from(["relu", "gelu", "silu", "tanh", "sigmoid"])),
                   bias=draw(st.booleans()), dropout=draw(st.sampled_from([0.0, 0.2])))


any_spec = st.one_of(transformer_specs(), cnn_specs(), rnn_specs(), mlp_specs())
sequence_specs = st.one_of(transformer_specs(), rnn_specs())


@st.composite
def workloads(draw, spec):
    """Random valid single-device training choices for ``spec``."""
    w = {"recompute": draw(st.sampled_from(["none", "selective", "full"])), "flash": draw(st.booleans()),
         "optimizer": draw(st.sampled_from(["sgd", "sgd-momentum", "adam", "adamw", "lamb", "adafactor",
                                            "adam-8bit", "lion"]))}
    if isinstance(spec, (TransformerSpec, RNNSpec)):
        w["seq"] = draw(st.integers(1, 48))
    return w


@st.composite
def parallel_workloads(draw, spec):
    """Random valid multi-device training choices: dp x tp x pp, ZeRO, sequence parallel."""
    w = draw(workloads(spec))
    tp = pp = 1
    if isinstance(spec, TransformerSpec):
        tp = draw(st.sampled_from([t for t in (1, 2, 4) if spec.heads % t == 0 and spec.d_ff % t == 0
                                   and (spec.n_kv_heads % t == 0 or t % spec.n_kv_heads == 0)]))
        layers = spec.layers + (spec.decoder_layers if spec.structure == "encoder-decoder" else 0)
        pp = draw(st.sampled_from([q for q in (1, 2, 3) if layers % q == 0]))
    dp = draw(st.sampled_from([1, 2, 4]))
    mb = draw(st.integers(1, 2))
    accum = draw(st.integers(1, 3))
    w.update(tp=tp, pp=pp, gpus=dp * tp * pp, micro_batch=mb, batch=dp * mb * accum,
             zero=draw(st.sampled_from([0, 1, 2, 3])), sequence_parallel=tp > 1 and draw(st.booleans()))
    return w


_HW = {}


def hw(name):
    if name not in _HW:
        _HW[name] = load_hardware(name)
    return _HW[name]


# --- linear in batch --------------------------------------------------------------
@FAST
@given(data=st.data(), spec=any_spec, batch=st.integers(1, 3), k=st.integers(2, 3),
       hw_name=st.sampled_from(HARDWARE))
def test_flops_and_activation_bytes_are_linear_in_batch(data, spec, batch, k, hw_name):
    w = data.draw(workloads(spec))
    a = estimate(spec, hw(hw_name), {**w, "batch": batch})
    b = estimate(spec, hw(hw_name), {**w, "batch": k * batch})
    for key in ("forward_flops", "backward_flops", "recompute_flops", "forward_matmul_flops",
                "backward_matmul_flops"):
        assert close(b[key], k * a[key]), (key, a[key], b[key])
    # Activations are linear in batch except for tensors saved once for the whole batch:
    # BatchNorm's per-channel fp32 mean and invstd (torch native_batch_norm's save_mean /
    # save_invstd, shape [C]), the int64 position ids of a learned position table (shape
    # (1, seq), broadcast over the batch), T5's (seq x key) relative-position bucket ids and
    # the loss's fp32 total_weight scalar.
    # So k*act(b) - act(k*b) = (k-1) * (those bytes), or less when full recompute keeps only
    # the largest block; exactly 0 for a model without them.
    stats = _batch_independent_saved_bytes(a)
    for key in ("activation_bytes", "activation_bytes_per_micro_batch"):
        gap = k * a[key] - b[key]
        assert -1e-9 * b[key] <= gap <= (k - 1) * stats + 1e-9 * b[key], (key, a[key], b[key], stats)
        if w["recompute"] != "full":
            assert close(gap, (k - 1) * stats), (key, a[key], b[key], stats)


def _batch_independent_saved_bytes(rep):
    from costmodel.ops import INDEX_BYTES, STAT_BYTES
    total = 0
    for c in rep.ops:
        o = c.op
        if o.kind == "batchnorm":
            total += c.count * 2 * o.dims["channels"] * STAT_BYTES
        elif o.kind == "embedding" and o.name == "position":
            total += c.count * o.dims["tokens"] * INDEX_BYTES
        elif o.kind == "param" and o.name == "relative_attention_bias":
            total += c.count * o.saved_bytes
        elif o.kind == "cross_entropy":          # nll_loss's fp32 total_weight scalar
            total += c.count * STAT_BYTES
    return total


@FAST
@given(spec=transformer_specs(), batch=st.integers(1, 3), k=st.integers(2, 3), seq=st.integers(1, 24),
       gen=st.integers(1, 16))
def test_inference_flops_and_kv_cache_are_linear_in_batch(spec, batch, k, seq, gen):
    w = {"mode": "inference", "seq": seq, "gen_tokens": gen}
    a = estimate(spec, hw("a100-80gb"), {**w, "batch": batch})
    b = estimate(spec, hw("a100-80gb"), {**w, "batch": k * batch})
    for key in ("forward_flops", "forward_matmul_flops", "kv_cache_bytes"):
        assert close(b[key], k * a[key]), (key, a[key], b[key])


# --- quadratic attention, the rest affine in seq ------------------------------------
def _op_flops(rep):
    out = {}
    for c in rep.ops:
        f, bf = out.get(c.path, (0.0, 0.0, c.op.quadratic))[:2]
        out[c.path] = (f + c.count * c.op.fwd_flops, bf + c.count * c.op.bwd_flops, c.op.quadratic)
    return out


@FAST
@given(spec=sequence_specs, seq=st.integers(1, 16), batch=st.integers(1, 2), flash=st.booleans())
def test_attention_scores_are_quadratic_in_seq_and_the_rest_affine(spec, seq, batch, flash):
    reps = [estimate(spec, hw("a100-80gb"), {"batch": batch, "seq": m * seq, "flash": flash}) for m in (1, 2, 3)]
    ops = [_op_flops(r) for r in reps]
    assert ops[0].keys() == ops[1].keys() == ops[2].keys()
    saw_quadratic = False
    for path, (f1, b1, quad) in ops[0].items():
        (f2, b2, _), (f3, b3, _) = ops[1][path], ops[2][path]
        for x1, x2, x3 in ((f1, f2, f3), (b1, b2, b3)):
            if quad:
                saw_quadratic = True
                assert close(x2, 4 * x1) and close(x3, 9 * x1), (path, x1, x2, x3)
            else:   # a + b*seq: equal steps
                assert close(x3 - x2, x2 - x1, rel=1e-9), (path, x1, x2, x3)
    if isinstance(spec, TransformerSpec):
        assert saw_quadratic, "a transformer without attention score ops"
    else:
        assert not saw_quadratic


# --- backward >= forward, params independent of the workload ------------------------
@FAST
@given(data=st.data(), spec=any_spec, batch=st.integers(1, 4))
def test_backward_flops_at_least_forward(data, spec, batch):
    w = data.draw(workloads(spec))
    r = estimate(spec, hw("a100-80gb"), {**w, "batch": batch})
    assert r["backward_flops"] >= r["forward_flops"] > 0
    assert r["backward_matmul_flops"] >= r["forward_matmul_flops"]


@FAST
@given(spec=any_spec, batch=st.integers(1, 4), seq=st.integers(1, 40), mode=st.sampled_from(["train", "inference"]))
def test_params_do_not_depend_on_batch_or_sequence(spec, batch, seq, mode):
    w = {"batch": batch, "mode": mode}
    if isinstance(spec, (TransformerSpec, RNNSpec)):
        w["seq"] = seq
        if mode == "inference" and isinstance(spec, TransformerSpec) and spec.structure != "encoder":
            w["gen_tokens"] = 8
    assert estimate(spec, hw("a100-80gb"), w)["params"] == count_params(spec)


# --- ZeRO-3 memory ------------------------------------------------------------------
# Per device, ZeRO-3 holds 1/dp of the model states plus a working set: the full
# parameters of the unit being computed and of the one prefetched, and that unit's full
# gradient before the reduce-scatter. With one device nothing is gathered (PyTorch FSDP
# uses the unsharded parameters directly at world size 1), so the working set appears
# between dp = 1 and dp = 2. For a model that is essentially one unit this makes 2
# devices need *more* memory each than 1 (fp32 + SGD, one linear of P params: 8P bytes
# alone; 2P + 2P shards + 4P gathered + 4P full gradient = 12P on each of 2 devices),
# so the law is: everything but the working set never grows with dp, the working set is
# the same for every dp >= 2, and a real model (many layers) never grows at all.
@FAST
@given(data=st.data(), spec=any_spec, hw_name=st.sampled_from(HARDWARE))
def test_zero3_memory_per_device_never_grows_with_devices(data, spec, hw_name):
    w = data.draw(workloads(spec))
    rows = []
    for dp in (1, 2, 4, 8):
        r = estimate(spec, hw(hw_name), {**w, "gpus": dp, "batch": dp, "micro_batch": 1, "zero": 3})
        ws = r.values.get("zero3_working_bytes", 0.0)
        slack = r.workload["allocator_slack"]
        rows.append((r["total_memory_bytes"], r["total_memory_bytes"] - ws * (1 + slack), ws,
                     r["weight_bytes"] + r["gradient_bytes"] + r["optimizer_bytes"]))
    assert rows[0][2] == 0.0
    for (t1, x1, w1, s1), (t2, x2, w2, s2) in zip(rows, rows[1:]):
        assert x2 <= x1 * (1 + 1e-12) and s2 <= s1 * (1 + 1e-12), rows
    for (t1, _, w1, _), (t2, _, w2, _) in zip(rows[1:], rows[2:]):
        assert w2 == w1 and t2 <= t1 * (1 + 1e-12), rows


@pytest.mark.parametrize("model", ["gpt2", "bert-base", "t5-small", "llama-2-7b", "resnet50", "lstm-2x1024"])
def test_zero3_memory_of_real_models_never_grows_with_devices(model):
    totals = [estimate(model, "a100-80gb", {"gpus": dp, "batch": dp, "micro_batch": 1, "zero": 3})
              ["total_memory_bytes"] for dp in (1, 2, 4, 8)]
    assert all(b <= a for a, b in zip(totals, totals[1:])), totals


# --- roofline lower bounds ----------------------------------------------------------
def _peak_max(h):
    vals = [p.flops for p in (getattr(h.peak, d) for d in type(h.peak).model_fields) if p is not None]
    vals += [v for v in (getattr(h.vector, d) for d in type(h.vector).model_fields) if v]
    return max(vals)


@FAST
@given(data=st.data(), spec=any_spec, batch=st.integers(1, 4), hw_name=st.sampled_from(HARDWARE),
       mode=st.sampled_from(["train", "inference"]))
def test_time_is_never_below_flops_over_peak_or_bytes_over_bandwidth(data, spec, batch, hw_name, mode):
    h = hw(hw_name)
    w = {**data.draw(workloads(spec)), "batch": batch, "mode": mode}
    if mode == "inference" and isinstance(spec, TransformerSpec) and spec.structure != "encoder":
        w["gen_tokens"] = 4
        w["seq"] = w.get("seq", 8)
    r = estimate(spec, h, w)
    peak, bw = _peak_max(h), h.memory.bandwidth
    slack = 1 - 1e-12
    f = b = tf = 0.0
    for c in r.ops:
        o = c.op
        assert c.fwd_time >= slack * max(o.fwd_flops / peak, o.fwd_bytes / bw), (c.path, c.fwd_time)
        if mode == "train":
            assert c.bwd_time >= slack * max(o.bwd_flops / peak, o.bwd_bytes / bw), (c.path, c.bwd_time)
        f += c.count * o.fwd_flops
        b += c.count * o.fwd_bytes
        tf += c.count * c.fwd_time
    # totals for one device (dp = tp = pp = 1 here)
    assert r["forward_time_s"] >= slack * max(f / peak, b / bw) * (batch / r.workload["micro_batch"])
    assert r["step_time_s"] >= slack * r["step_flops"] / peak
    if mode == "train":
        assert r["step_time_s"] >= slack * (r["forward_time_s"] + r["backward_time_s"])


@FAST
@given(data=st.data(), spec=any_spec, hw_name=st.sampled_from(HARDWARE))
def test_parallel_runs_respect_the_roofline_and_report_no_negative_numbers(data, spec, hw_name):
    h = hw(hw_name)
    w = data.draw(parallel_workloads(spec))
    r = estimate(spec, h, w)
    peak, bw = _peak_max(h), h.memory.bandwidth
    for c in r.ops:   # one device's ops (heads and d_ff split by tp)
        assert c.fwd_time >= (1 - 1e-12) * max(c.op.fwd_flops / peak, c.op.fwd_bytes / bw), c.path
        assert c.bwd_time >= (1 - 1e-12) * max(c.op.bwd_flops / peak, c.op.bwd_bytes / bw), c.path
    assert r["step_time_s"] * r.workload["gpus"] * peak >= (1 - 1e-12) * r["step_flops"]
    bad = {k: v for k, v in r.values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
           and (not math.isfinite(v) or (v < 0 and k != "memory_headroom_bytes"))}
    assert not bad, bad
    json.loads(render.to_json(r, "block"), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))


# --- round trips --------------------------------------------------------------------
def _same(a, b, path="$"):
    if isinstance(a, float) and not math.isfinite(a):
        raise AssertionError(f"{path}: non-finite number {a} in a report")
    if isinstance(a, (list, tuple)):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(map(str, a)) == set(b), (path, set(a) ^ set(b))
        for k, v in a.items():
            _same(v, b[str(k)], f"{path}.{k}")
    else:
        assert type(a) is type(b) and a == b, (path, a, b)


@FAST
@given(data=st.data(), spec=any_spec, batch=st.integers(1, 4), mode=st.sampled_from(["train", "inference"]),
       detail=st.sampled_from(["model", "block", "op"]))
def test_every_report_survives_a_json_round_trip(data, spec, batch, mode, detail):
    w = {**data.draw(workloads(spec)), "batch": batch, "mode": mode}
    if mode == "inference" and isinstance(spec, TransformerSpec) and spec.structure != "encoder":
        w["gen_tokens"] = 4
    rep = estimate(spec, hw("a100-80gb"), w)
    back = json.loads(render.to_json(rep, detail), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    _same(rep.to_dict(ops=True), {k: v for k, v in back.items() if k != "breakdown"})


@FAST
@given(spec=any_spec)
def test_every_spec_survives_spec_to_yaml_to_spec(spec, tmp_path_factory):
    # (PyYAML's emitter with allow_unicode=True writes U+0085 raw and reads it back as a
    # line break, so specs are written with escapes, as `costmodel show` does)
    text = yaml.safe_dump(spec.model_dump(by_alias=True, exclude_none=True), sort_keys=False)
    loc = loads(text, "<round-trip>")            # our bounded loader, as for a user's file
    back = parse_model(loc.data, loc=loc)
    assert back == spec
    assert count_params(back) == count_params(spec)
    # and through the CLI: a spec file -> `costmodel show` -> the same spec
    f = tmp_path_factory.mktemp("spec") / "spec.yaml"
    f.write_text(text, encoding="utf-8")
    r = CliRunner().invoke(main, ["show", str(f)])
    assert r.exit_code == 0, r.output
    shown = loads(r.stdout, "<show>")
    assert parse_model(shown.data, loc=shown) == spec


@pytest.mark.parametrize("name", ["a100-80gb", "v100-16gb", "tpu-v4", "h100-sxm", "mi300x"])
def test_shipped_hardware_survives_yaml_round_trip(name, tmp_path):
    h = hw(name)
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(h.model_dump(exclude_none=True), sort_keys=False))
    assert load_hardware(str(f)) == h
