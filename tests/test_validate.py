"""Layer 1 of validation: the engine against torch itself (needs torch).

Each case builds the model from its spec in torch (costmodel/validate/torch_build.py),
runs one fp32 training forward + backward, and checks against the engine:

* parameters: sum(p.numel()) == costmodel.count_params;
* torch.utils.flop_counter.FlopCounterMode FLOPs == forward_matmul_flops
  (+ backward_matmul_flops), up to FlopCounterMode's own grouped-conv bug;
* bytes autograd saves for backward (saved_tensors_hooks, unique storages,
  parameters/buffers excluded) == activation_bytes_per_micro_batch + the
  known, spec-computed gaps -- per op kind, to the byte.

The reference numbers come from torch at test time, not from this file.
Small models run whole at tiny shapes on the CPU; big ones run one layer, on
the meta device (shapes and storage sizes, no data).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from costmodel.catalog import load_model  # noqa: E402
from costmodel.specs.model import CNNSpec, MLPSpec, RNNSpec, TransformerSpec, ViTSpec  # noqa: E402
from costmodel.validate.exact import check  # noqa: E402

# (model, check kwargs, op kinds allowed to carry a known gap)
SHIPPED_CPU = [
    ("gpt2", dict(batch=2, seq=16, overrides={"layers": 2}), set()),
    ("bert-base", dict(batch=2, seq=16, overrides={"layers": 2}), set()),
    ("t5-small", dict(batch=2, seq=16, target_seq=12, overrides={"layers": 1, "decoder_layers": 2}), {"norm"}),
    ("bart-base", dict(batch=2, seq=16, target_seq=12, overrides={"layers": 1, "decoder_layers": 2}), set()),
    ("transformer-base", dict(batch=2, seq=16, target_seq=12, overrides={"layers": 1, "decoder_layers": 2}), set()),
    ("vit-b16", dict(batch=1, overrides={"layers": 1}), set()),
    ("resnet18", dict(batch=1, image=64), {"activation", "pool"}),
    ("resnet50", dict(batch=2, image=32), {"activation", "pool"}),
    ("resnext50-32x4d", dict(batch=1, image=64), {"activation", "pool"}),
    ("vgg11", dict(batch=1, image=32), set()),
    ("lstm-2x1024", dict(batch=2, seq=4), {"rnn"}),
    ("gru-2x1024", dict(batch=2, seq=4), {"rnn"}),
    ("bilstm-512", dict(batch=2, seq=4), {"rnn"}),
    ("mlp-mnist", dict(batch=4), set()),
]

SHIPPED_META = [   # one layer of the big ones, on the meta device
    ("gpt3-175b", dict(batch=1, seq=16, overrides={"layers": 1})),
    ("llama-2-7b", dict(batch=1, seq=16, overrides={"layers": 1})),
    ("gpt2-xl", dict(batch=2, seq=16, overrides={"layers": 1})),
    ("bert-large", dict(batch=2, seq=16, overrides={"layers": 1})),
    ("t5-large", dict(batch=1, seq=16, target_seq=8, overrides={"layers": 1, "decoder_layers": 1})),
    ("vit-h14", dict(batch=1, overrides={"layers": 1})),
    ("resnet152", dict(batch=1, image=64)),
]


def _tf(**kw):
    base = dict(arch="transformer", name="tiny", structure="decoder", layers=2, d_model=64, heads=4, d_ff=128,
                vocab_size=97, max_positions=64)
    return TransformerSpec(**{**base, **kw})


# every option of costmodel/specs/model.py that no shipped model exercises
SYNTHETIC = [
    ("gqa-rotary-rmsnorm-swiglu", _tf(kv_heads=2, position="rotary", norm="rmsnorm", norm_bias=False,
                                      activation="swiglu", biases={"qkv": False, "attn_out": False, "ffn": False},
                                      tied_embeddings=False, dropout=0.0), {"rotary", "norm"}),
    ("neox-partial-rotary-parallel", _tf(position="rotary", rotary_fraction=0.25, parallel_residual=True,
                                         tied_embeddings=False, activation="gelu"), {"rotary"}),
    ("mlm-transform-geglu-post", _tf(structure="encoder", token_types=2, embedding_norm=True, norm_position="post",
                                     final_norm=False, activation="geglu", lm_head_transform=True,
                                     biases={"lm_head": True}), set()),
    ("cls-sinusoidal-pooler-relu", _tf(structure="encoder", position="sinusoidal", activation="relu", pooler=True,
                                       num_classes=5, lm_head=False), set()),
    ("t5-geglu", _tf(structure="encoder-decoder", position="relative_bias", relative_buckets=16, norm="rmsnorm",
                     norm_bias=False, activation="geglu", biases={"qkv": False, "attn_out": False, "ffn": False},
                     d_head=32), {"norm"}),
    ("vit-pooler-noqkvbias", ViTSpec(arch="vit", name="tiny-vit", image_size=32, patch_size=8, layers=2, d_model=64,
                                     heads=4, d_ff=128, num_classes=10, pooler=True, qkv_bias=False, dropout=0.1),
     set()),
    ("cnn-mixed", CNNSpec(arch="cnn", name="tiny-cnn", image_size=32, layers=[
        {"type": "conv", "out": 8, "kernel": 3, "padding": 1}, {"type": "bn"}, {"type": "gelu"},
        {"type": "avgpool", "kernel": 2}, {"type": "conv", "out": 16, "kernel": 3, "stride": 2, "bias": False},
        {"type": "silu"}, {"type": "maxpool", "kernel": 2}, {"type": "conv", "out": 16, "kernel": 1},
        {"type": "relu"}, {"type": "adaptive_avgpool", "output": 2}, {"type": "flatten"},
        {"type": "linear", "out": 32}, {"type": "tanh"}, {"type": "dropout", "p": 0.2},
        {"type": "linear", "out": 16}, {"type": "sigmoid"}, {"type": "linear", "out": 4}]), set()),
    ("mlp-tanh-dropout", MLPSpec(arch="mlp", name="tiny-mlp", input_size=20, hidden=[32, 16], output_size=3,
                                 activation="tanh", dropout=0.25), set()),
    ("mlp-sigmoid", MLPSpec(arch="mlp", name="tiny-mlp2", input_size=20, hidden=[32], output_size=3,
                            activation="sigmoid"), set()),
    ("rnn-bi-vocab-head", RNNSpec(arch="rnn", name="tiny-rnn", cell="rnn", input_size=12, hidden_size=20, layers=2,
                                  bidirectional=True, vocab_size=50, num_classes=3), {"rnn"}),
    ("gru-vocab-head", RNNSpec(arch="rnn", name="tiny-gru", cell="gru", input_size=12, hidden_size=20,
                               vocab_size=50, num_classes=3), {"rnn"}),
]


def _assert_exact(r, allowed_gap_kinds):
    assert r.params_torch == r.params_engine, "parameters"
    assert r.fwd_flops_torch == r.fwd_flops_engine, "forward matmul FLOPs"
    assert r.fwdbwd_flops_torch == r.fwdbwd_flops_engine + r.counter_gap, "forward+backward matmul FLOPs"
    assert r.saved_torch is not None and r.saved_torch > 0
    gap_kinds = {g.kind for g in r.gaps if g.bytes}
    assert gap_kinds <= allowed_gap_kinds, f"unexpected known gaps {gap_kinds - allowed_gap_kinds}"
    for row in r.by_kind():
        assert row["unexplained"] == 0, f"saved bytes of {row['kind']}: {row}"
    assert r.saved_engine + r.explained == r.saved_torch
    assert r.ok


@pytest.mark.parametrize("name,kw,gaps", SHIPPED_CPU, ids=[c[0] for c in SHIPPED_CPU])
def test_shipped_models_exact_on_cpu(name, kw, gaps):
    _assert_exact(check(name, **kw), gaps)


@pytest.mark.parametrize("name,kw", SHIPPED_META, ids=[c[0] for c in SHIPPED_META])
def test_big_models_one_layer_exact_on_meta(name, kw):
    r = check(name, device="meta", **kw)
    spec = load_model(name)
    allowed = {"activation", "pool"} if spec.arch == "cnn" else set()
    if spec.arch == "transformer":
        allowed |= {"rotary"} if spec.position == "rotary" else set()
        allowed |= {"norm"} if spec.norm == "rmsnorm" else set()
    _assert_exact(r, allowed)


@pytest.mark.parametrize("case,spec,gaps", SYNTHETIC, ids=[c[0] for c in SYNTHETIC])
def test_every_spec_option_exact(case, spec, gaps):
    kw = {"batch": 2}
    if isinstance(spec, TransformerSpec):
        kw.update(seq=12, target_seq=8 if spec.structure == "encoder-decoder" else None)
    elif isinstance(spec, RNNSpec):
        kw.update(seq=5)
    _assert_exact(check(spec, **kw), gaps)


def test_meta_and_cpu_agree():
    """The meta device (used for big models) measures the same bytes as real CPU tensors."""
    kw = dict(batch=2, seq=16, overrides={"layers": 1})
    cpu, meta = check("gpt2", **kw), check("gpt2", device="meta", **kw)
    assert (cpu.saved_torch, cpu.fwdbwd_flops_torch) == (meta.saved_torch, meta.fwdbwd_flops_torch)


def test_saved_bytes_are_seen_by_the_hook():
    """The measurement is not vacuous: a known tensor saved by torch shows up with its exact size."""
    r = check("mlp-mnist", batch=8)
    # fc0 saves the (8, 784) fp32 input; fc1 and out save their inputs (8x512, 8x256), as ReLU outputs
    assert r.saved_by_kind_torch == {"linear": 8 * (784 + 512 + 256) * 4}


def test_flop_counter_grouped_conv_probe_matches_direct_count():
    from torch.utils.flop_counter import FlopCounterMode

    from costmodel.validate.exact import flop_counter_ignores_conv_groups
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=8, bias=False)
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    with FlopCounterMode(display=False) as fc:
        y = conv(x)
        f = fc.get_total_flops()
        y.sum().backward()
    bwd = fc.get_total_flops() - f
    assert flop_counter_ignores_conv_groups() == (bwd != 2 * f)
    if flop_counter_ignores_conv_groups():
        assert bwd == (1 + 8) * f     # input grad (correct) + weight grad counted groups x


def test_reference_parameter_counts_transformers():
    pytest.importorskip("transformers")
    from costmodel.validate.reference import reference_params
    for name in ("gpt2", "t5-small", "bart-base", "llama-2-7b"):
        r = reference_params(load_model(name))
        assert r.params is not None and r.params == r.engine, (name, r)


def test_reference_parameter_counts_torchvision():
    pytest.importorskip("torchvision")
    from costmodel.validate.reference import reference_params
    for name in ("resnet50", "vit-b16", "resnext50-32x4d"):
        r = reference_params(load_model(name))
        assert r.params is not None and r.params == r.engine, (name, r)


def test_reference_parameter_counts_torch_nn():
    from costmodel.validate.reference import reference_params
    for name in ("lstm-2x1024", "bilstm-512", "gru-2x1024", "transformer-base"):
        r = reference_params(load_model(name))
        assert r.params is not None and r.params == r.engine, (name, r)


def test_measure_step_memory_counts_model_states():
    """CPU peak memory of a training step includes weights, gradients and the
    two AdamW states: at least 16 bytes per fp32 parameter."""
    from costmodel.validate.measure import _model_setup, peak_memory, time_fn
    fn, fields = _model_setup("gpt2", "train", "fp32", 1, 8, None, "cpu")()
    ts = time_fn(fn, "cpu", 1, 1)
    assert ts[0] > 0
    peak, method = peak_memory(fn, "cpu")
    assert peak is not None, method
    assert peak >= 16 * fields["params"]
    assert peak < 16 * fields["params"] * 1.5


def test_single_op_scenarios_predictable():
    """Every single-op scenario names engine ops the engine can cost."""
    from costmodel.catalog import load_hardware
    from costmodel.validate.compare import predict_single
    from costmodel.validate.measure import single_op_scenarios
    hw = load_hardware("cpu-host")
    for dev_quick in (True, False):
        for sc in single_op_scenarios("meta", ["fp32", "bf16"], dev_quick):
            assert predict_single(dict(sc.meta, category="single_op"), hw) > 0, sc.id


def test_cli_exact_and_errors():
    from click.testing import CliRunner

    from costmodel.cli import main
    res = CliRunner().invoke(main, ["validate", "--exact", "gpt2", "--set", "model.layers=1",
                                    "--seq", "8", "--batch", "1", "--no-reference"])
    assert res.exit_code == 0, res.output
    assert "1/1 models exact" in res.output and "bytes saved for backward per engine op kind" in res.output
    res = CliRunner().invoke(main, ["validate", "--exact", "mlp-mnist", "--set", "model.layers=1"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "no field 'layers'" in res.output
    res = CliRunner().invoke(main, ["validate", "--exact", "no-such-model"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "unknown model" in res.output
    res = CliRunner().invoke(main, ["measure", "--model", "no-such-model"])
    assert res.exit_code == 2 and "unknown model" in res.output


@pytest.mark.parametrize("name,impl,dtype", [("adamw", "single-tensor", "fp32"), ("adamw", "foreach", "fp32"),
                                             ("adam", "single-tensor", "fp32"), ("adamw", "single-tensor", "bf16"),
                                             ("sgd-momentum", "single-tensor", "fp32")])
def test_unfused_optimizer_bytes_match_torch(name, impl, dtype):
    """engine.update_bytes_per_param against the aten ops torch.optim really runs:
    a dispatch mode sums, over every op of one step on one N-element tensor, the
    bytes of its distinct tensor inputs (read) and outputs (written); scalars
    and the step counter (< N/2 elements) are left out. Also checks the
    kernels that write a new tensor (engine.update_fresh_kernels: bytes per
    parameter of each, its output read once and written once)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from costmodel.engine import update_bytes_per_param, update_fresh_kernels
    from costmodel.memory import optimizer_state_bytes_per_param, state_dtypes
    n = 4096
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    p = torch.nn.Parameter(torch.randn(n, dtype=dt))
    p.grad = torch.randn(n, dtype=dt)
    kw = {"foreach": impl == "foreach"}
    opt = (torch.optim.SGD([p], lr=0.1, momentum=0.9, **kw) if name == "sgd-momentum" else
           (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)([p], lr=1e-3, **kw))
    opt.step()                                  # creates the states
    big = lambda t: isinstance(t, torch.Tensor) and t.numel() >= n // 2   # noqa: E731

    def flat(x):
        if isinstance(x, (list, tuple)):
            return [u for v in x for u in flat(v)]
        return [x] if big(x) else []

    class Count(TorchDispatchMode):
        moved, fresh = 0, []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ins = {t.untyped_storage().data_ptr(): t for t in flat(list(args) + list((kwargs or {}).values()))}
            out = func(*args, **(kwargs or {}))
            # written: the outputs and the arguments the schema marks as mutated
            # (in-place foreach ops return nothing)
            mutated = [a for a, sa in zip(args, func._schema.arguments) if sa.alias_info and sa.alias_info.is_write]
            outs = {t.untyped_storage().data_ptr(): t for t in flat(out) + flat(mutated)}
            Count.moved += sum(t.numel() * t.element_size() for t in list(ins.values()) + list(outs.values()))
            Count.fresh += [2 * t.numel() * t.element_size() / n for k, t in outs.items() if k not in ins]
            return out

    with Count():
        opt.step()
    d = state_dtypes(dtype, master_weights=False, fp32_grads=False)
    opt_bpp = optimizer_state_bytes_per_param(name, d["state"])
    assert Count.moved / n == update_bytes_per_param(name, impl, d, opt_bpp)
    assert sorted(Count.fresh) == sorted(update_fresh_kernels(name, impl, d))
