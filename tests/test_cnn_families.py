"""CNN building blocks general enough for the torchvision families, exact to the parameter.

Ground truth: tests/data/reference_cnn.json, written by
tests/data/make_reference_cnn.py, which builds each torchvision model a shipped
CNN spec names (``reference.config``, weights=None; torchvision 0.29.1, torch
2.14.1), runs one train-mode forward and backward of logits.sum() on a
1x3x224x224 input under torch.utils.flop_counter.FlopCounterMode and records
sum(p.numel()), the forward FLOPs, and the forward+backward FLOPs (with the
weight gradient of grouped convs counted once: torch's counter counts it
``groups`` times, pytorch/pytorch PR #183405 -- the raw total is kept too).

The block semantics (residual with ``blocks: N``, squeeze-excitation,
depthwise convs, concat) are also checked against hand counts and against
equivalent unrolled specs; with torch installed, the new families run through
costmodel/validate/exact.py (params, FLOPs and saved bytes, to the byte).
"""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from costmodel import count_params, estimate, load_model
from costmodel.catalog import parse_model
from costmodel.cli import main
from costmodel.errors import CostModelError

HERE = os.path.dirname(__file__)
REF = json.load(open(os.path.join(HERE, "data", "reference_cnn.json")))
NEW = ["mobilenet-v2", "mobilenet-v3-large", "efficientnet-b0", "alexnet", "regnet-y-400mf", "convnext-tiny"]
CONCAT = ["squeezenet1-1", "densenet121", "googlenet", "shufflenet-v2-x1-0"]
HW = "a100-80gb"


def _est(model, **kw):
    return estimate(model, HW, {**dict(batch=1, image=224, precision="fp32"), **kw})


def test_reference_covers_every_torchvision_cnn_spec():
    names = {e["name"] for e in REF}
    assert set(NEW + CONCAT) <= names
    for f in sorted(os.listdir(os.path.join(HERE, "..", "models"))):
        spec = load_model(os.path.join(HERE, "..", "models", f))
        if spec.arch == "cnn" and spec.reference.library.startswith("torchvision"):
            assert spec.name in names, f"{spec.name}: run tests/data/make_reference_cnn.py {spec.name}"


@pytest.mark.parametrize("e", REF, ids=[e["name"] for e in REF])
def test_params_and_matmul_flops_equal_torchvision(e):
    spec = load_model(e["name"])
    assert spec.reference.params == e["params"]
    assert count_params(spec) == e["params"], (e["name"], e["constructor"])
    r = _est(e["name"])
    assert r["forward_matmul_flops"] == e["forward_flops"]
    fb = r["forward_matmul_flops"] + r["backward_matmul_flops"]
    assert fb == e["forward_backward_flops"]
    # the raw FlopCounterMode total differs by exactly the grouped convs' weight gradients counted `groups` times
    gap = sum(c.count * c.op.matmul_flops * (c.op.dims["groups"] - 1) for c in r.ops if c.op.kind == "conv2d")
    assert fb + gap == e["forward_backward_flops_flop_counter"]


@pytest.mark.parametrize("e", REF, ids=[e["name"] for e in REF])
def test_saved_bytes_equal_the_real_torchvision_model(e):
    """Bytes autograd kept in the real torchvision model (CPU, fp32, batch 1, 224 px; unique storages,
    parameters and buffers excluded) minus two documented CPU-vs-GPU differences, to the byte:
    F.dropout on the CPU keeps a 4-byte float noise per element where the CUDA kernel (the engine)
    keeps a 1-byte mask, and each torchvision StochasticDepth block with p > 0 keeps an (N,1,1,1)
    fp32 noise tensor, which the specs leave out."""
    r = _est(e["name"])
    dropout = sum(c.count * c.op.dims["elements"] for c in r.ops if c.op.kind == "dropout")
    gap = dropout * (4 - 1) + 4 * 1 * e["stochastic_depth_masks"]
    assert r["activation_bytes_per_micro_batch"] + gap == e["saved_bytes_cpu"]


# --- the building blocks, by hand ---------------------------------------------------
def _spec(layers, image=8, channels=3, name="t"):
    return parse_model({"name": name, "arch": "cnn", "image_size": image, "channels": channels, "layers": layers})


def _ops(spec, batch=2, image=None):
    r = estimate(spec, HW, dict(batch=batch, precision="fp32", image=image or spec.image_size))
    return r, {c.path.split("/", 1)[1]: c for c in r.ops}


def test_depthwise_conv_params_and_flops():
    # groups == channels: one k x k filter per channel (torch.nn.Conv2d weight (C, 1, k, k))
    s = _spec([{"type": "conv", "out": 16, "kernel": 1, "bias": False},
               {"type": "conv", "out": 16, "kernel": 3, "padding": 1, "groups": 16, "bias": False}])
    r, ops = _ops(s, batch=2)
    dw = ops["stem/conv2"].op
    assert dw.params == 16 * 3 * 3 and dw.param_shapes == ((16, 1, 3, 3),)
    assert dw.matmul_flops == 2 * 2 * 8 * 8 * 16 * 3 * 3
    assert dw.bwd_matmul_flops == 2 * dw.matmul_flops
    assert count_params(s) == 3 * 16 + 16 * 9


def test_squeeze_excitation_params_flops_and_saved_bytes():
    n, c, sq, hw = 2, 16, 4, 8 * 8
    base = [{"type": "conv", "out": c, "kernel": 3, "padding": 1, "bias": False}]
    for gate, extra in (("sigmoid", 0), ("hardsigmoid", n * c)):
        s = _spec(base + [{"type": "se", "reduce_channels": sq, "gate": gate}, {"type": "flatten"}])
        r, ops = _ops(s, batch=n)
        se = [o for p, o in ops.items() if p.startswith("stem/se2.")]
        assert len(se) == 6                      # avgpool, fc1, activation, fc2, gate, scale
        # torchvision SqueezeExcitation: fc1 (c -> sq, bias), fc2 (sq -> c, bias)
        assert sum(o.op.params for o in se) == c * sq + sq + sq * c + c
        assert sum(o.op.matmul_flops for o in se) == 2 * n * c * sq * 2
        # saved: pooled input (fc1), ReLU output (= fc2 input), gate output, the SE input x (the multiply);
        # a hardsigmoid gate also keeps its input (fc2 output)
        assert sum(o.op.saved_bytes for o in se) == 4 * (n * c + n * sq + n * c + n * c * hw + extra), gate


def test_se_ratio_or_reduce_channels():
    s = _spec([{"type": "conv", "out": 16, "kernel": 1}, {"type": "se", "ratio": 0.25}])
    assert count_params(s) == (3 * 16 + 16) + (16 * 4 + 4) + (4 * 16 + 16)   # conv; SE fc1 16->4, fc2 4->16
    with pytest.raises(CostModelError, match="reduce_channels or ratio"):
        _spec([{"type": "conv", "out": 16, "kernel": 1}, {"type": "se", "ratio": 0.25, "reduce_channels": 4}])


def _unrolled(layers):
    """Each residual with blocks: N written as N single blocks (the later ones: strides 1, identity)."""
    from costmodel.build import _stride1
    out = []
    for L in layers:
        d = L.model_dump(exclude_defaults=True)
        d["type"] = L.type
        if L.type == "residual" and L.blocks > 1:
            first = {**d, "blocks": 1}
            rest = {"type": "residual", "body": [x.model_dump() for x in _stride1(L.body)]}
            if L.activation:
                rest["activation"] = L.activation
            out += [first] + [rest] * (L.blocks - 1)
        else:
            out.append(d)
    return out


@pytest.mark.parametrize("model", ["mobilenet-v2", "regnet-y-400mf", "convnext-tiny", "efficientnet-b0"])
def test_repeated_blocks_built_once_equal_the_unrolled_spec(model):
    spec = load_model(model)
    flat = parse_model({**spec.model_dump(by_alias=True, exclude_none=True),
                        "layers": _unrolled(spec.layers)})
    a, b = _est(spec, batch=3, image=96), _est(flat, batch=3, image=96)
    for k in ("params", "forward_flops", "backward_flops", "forward_matmul_flops", "backward_matmul_flops",
              "activation_bytes", "weight_bytes"):
        assert a[k] == b[k], k
    assert len(a.ops) < len(b.ops)                        # built once ...
    assert max(c.count for c in a.ops) > 1                # ... and counted


def test_residual_stage_rule_reproduces_resnet_stage():
    # ResNet-50 written with generic residual layers: block 0 strided with a 1x1 conv + BN projection,
    # blocks 1..N-1 the same body with stride 1 and the identity -- exactly torchvision's Bottleneck stage
    r50 = load_model("resnet50")
    layers = [L.model_dump(exclude_defaults=True) | {"type": L.type} for L in r50.layers[:4]]
    c = 64
    for L in r50.layers[4:8]:
        w, out = L.planes, L.planes * 4
        body = [{"type": "conv", "out": w, "kernel": 1, "bias": False}, {"type": "bn"}, {"type": "relu"},
                {"type": "conv", "out": w, "kernel": 3, "stride": L.stride, "padding": 1, "bias": False},
                {"type": "bn"}, {"type": "relu"}, {"type": "conv", "out": out, "kernel": 1, "bias": False},
                {"type": "bn"}]
        layers.append({"type": "residual", "blocks": L.blocks, "activation": "relu", "body": body,
                       "shortcut": [{"type": "conv", "out": out, "kernel": 1, "stride": L.stride, "bias": False},
                                    {"type": "bn"}]})
        c = out
    layers += [L.model_dump(exclude_defaults=True) | {"type": L.type} for L in r50.layers[8:]]
    gen = parse_model({"name": "r50-generic", "arch": "cnn", "layers": layers})
    assert count_params(gen) == r50.reference.params == 25557032
    a, b = _est(r50, batch=2), _est(gen, batch=2)
    for k in ("forward_flops", "backward_flops", "forward_matmul_flops", "backward_matmul_flops",
              "activation_bytes"):
        assert a[k] == b[k], k


def test_concat_and_identity_branch():
    # DenseNet-style: cat(x, f(x)) grows the channels each block (blocks are then built one by one)
    s = _spec([{"type": "conv", "out": 8, "kernel": 3, "padding": 1, "bias": False},
               {"type": "concat", "blocks": 3, "branches": [[], [{"type": "bn"}, {"type": "relu"},
                                                                 {"type": "conv", "out": 4, "kernel": 3,
                                                                  "padding": 1, "bias": False}]]},
               {"type": "adaptive_avgpool"}, {"type": "flatten"}, {"type": "linear", "out": 10}])
    assert count_params(s) == 3 * 9 * 8 + sum(2 * c + c * 9 * 4 for c in (8, 12, 16)) + 20 * 10 + 10
    # ShuffleNet-style split: each branch gets half the channels (a view: the storage is counted once)
    s2 = _spec([{"type": "conv", "out": 8, "kernel": 1},
                {"type": "concat", "split": True, "branches": [[], [{"type": "conv", "out": 4, "kernel": 1}]]},
                {"type": "channel_shuffle", "groups": 2}])
    assert count_params(s2) == 3 * 8 + 8 + 4 * 4 + 4


# --- clear errors -------------------------------------------------------------------
BAD = [
    ([{"type": "conv", "out": 8, "kernel": 3, "padding": 1},
      {"type": "residual", "body": [{"type": "conv", "out": 16, "kernel": 3, "padding": 1}]}],
     "layers[1]", "residual body output 16x8x8 does not match the block input (identity shortcut) 8x8x8"),
    ([{"type": "conv", "out": 8, "kernel": 3, "padding": 1},
      {"type": "residual", "body": [{"type": "conv", "out": 8, "kernel": 3, "stride": 2, "padding": 1}],
       "shortcut": [{"type": "conv", "out": 8, "kernel": 1}]}],
     "layers[1]", "does not match the projection shortcut 8x8x8"),
    ([{"type": "conv", "out": 8, "kernel": 3},
      {"type": "residual", "body": [{"type": "conv", "out": 8, "kernel": 9}]}],
     "layers[1].body[0]", "conv (kernel 9, stride 1, padding 0) on a 6x6 input gives an empty output"),
    ([{"type": "conv", "out": 12, "kernel": 1}, {"type": "conv", "out": 12, "kernel": 3, "groups": 8}],
     "layers[1]", "groups 8 does not divide the 12 input and 12 output channels"),
    ([{"type": "conv", "out": 8, "kernel": 1},          # block 0 fits its projection; the repeated block cannot
      {"type": "residual", "blocks": 2, "body": [{"type": "conv", "out": 8, "kernel": 3}],
       "shortcut": [{"type": "conv", "out": 8, "kernel": 3}]}],
     "layers[1]", "repeated block (blocks 2-2: strides 1, identity shortcut): residual body output 8x4x4 does "
                  "not match the block input (identity shortcut) 8x6x6"),
    ([{"type": "conv", "out": 8, "kernel": 1}, {"type": "flatten"}, {"type": "se", "ratio": 0.5}],
     "layers[2]", "se layer after flatten"),
    ([{"type": "conv", "out": 9, "kernel": 1},
      {"type": "concat", "split": True, "branches": [[], []]}],
     "layers[1]", "split: 2 branches do not divide the 9 input channels"),
    ([{"type": "conv", "out": 8, "kernel": 1},
      {"type": "concat", "branches": [[{"type": "maxpool", "kernel": 2}], []]}],
     "layers[1]", "concat branch 1 gives 8x8 pixels, branch 0 4x4"),
]


@pytest.mark.parametrize("layers,field,message", BAD, ids=[b[1] + ":" + b[2][:30] for b in BAD])
def test_bad_cnn_specs_say_where_and_what(layers, field, message, tmp_path):
    f = tmp_path / "bad.yaml"
    lines = ["name: bad", "arch: cnn", "image_size: 8", "layers:"]
    import yaml
    lines += ["  " + x for x in yaml.safe_dump(layers, default_flow_style=None, sort_keys=False).splitlines()]
    f.write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(main, ["estimate", str(f)])
    assert r.exit_code == 2, r.output
    err = r.stderr
    assert err.count("\n") == 1 and "Traceback" not in r.output, err
    assert f": {field}: " in err and message in err, err
    assert err.startswith(f"error: {f}:"), err     # with the line of that layer


def test_workload_image_too_small_names_the_nested_layer(tmp_path):
    f = tmp_path / "res.yaml"
    f.write_text("name: res\narch: cnn\nimage_size: 16\nlayers:\n  - {type: conv, out: 8, kernel: 1}\n"
                 "  - type: residual\n    body: [{type: conv, out: 8, kernel: 3}]\n"
                 "    shortcut: [{type: conv, out: 8, kernel: 3}]\n")
    assert CliRunner().invoke(main, ["estimate", str(f)]).exit_code == 0
    r = CliRunner().invoke(main, ["estimate", str(f), "--image", "2"])
    assert r.exit_code == 2, r.output
    assert "model.layers[1]: body[0]: conv (kernel 3, stride 1, padding 0) on a 2x2 input gives an empty output " \
           "(size 0) at image 2 (expected an image of at least 3 pixels" in r.stderr, r.stderr


# --- against torch itself (only where torch is installed) -----------------------------
@pytest.mark.parametrize("model", NEW + CONCAT)
def test_new_families_exact_against_torch(model):
    pytest.importorskip("torch")
    from costmodel.validate.exact import check
    r = check(model, batch=1, image=64)
    assert r.params_torch == r.params_engine
    assert r.fwd_flops_torch == r.fwd_flops_engine
    assert r.fwdbwd_flops_torch == r.fwdbwd_flops_engine + r.counter_gap
    assert r.unexplained == 0, r.by_kind()
