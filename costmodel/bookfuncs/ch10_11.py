"""Formulas for the book's chapters 10-11 figures (transformer anatomy,
training at scale) that the core function library does not cover.

Every function is general (any model / any numbers), cites its source, and
builds on the engine (``costmodel.build`` trees, ``costmodel.memory``) where
one applies.
"""
from __future__ import annotations

import math


def _spec(model, overrides):
    from ..catalog import load_model, parse_model
    from ..engine import _apply_overrides
    spec = parse_model(model) if isinstance(model, dict) else load_model(model)
    ov = {k.split("__", 1)[1].replace("__", "."): v for k, v in overrides.items() if k.startswith("model__")}
    bad = [k for k in overrides if not k.startswith("model__")]
    if bad:
        from ..errors import CostModelError
        raise CostModelError(f"unexpected argument(s) {', '.join(bad)} (expected model__FIELD overrides)")
    return _apply_overrides(spec, ov, "model.") if ov else spec


def _tree_sum(tree, field, kind=None, name=None):
    kinds = (kind,) if isinstance(kind, str) else kind
    names = (name,) if isinstance(name, str) else name
    tot = 0.0
    for path, mult, op in tree.walk():
        if kinds and op.kind not in kinds:
            continue
        if names and not any(n in path for n in names):
            continue
        tot += mult * getattr(op, field)
    return tot


def decode_ops_sum(model, field="matmul_flops", kv_len=1, seq=None, batch=1, precision="fp16", kind=None,
                   name=None, **overrides):
    """Sum an op attribute over ONE KV-cached decode step of a transformer:
    the new token (q_len = 1) attends over ``kv_len`` cached positions (self-
    attention) and, for encoder-decoder models, over ``seq`` encoder positions
    (cross-attention, K/V of the source cached once). Built with the engine's
    own decode tree (costmodel.build, Shape.kv_len); filters as ops_sum.
    Per layer and step: 2(2 d^2 + 2 d kv_heads d_head) projection FLOPs,
    2*2*kv_len*d attention FLOPs (Q K^T and P V), 2*2*d*d_ff FFN FLOPs
    (book 10.4.2 / 10.11; Pope et al. 2022, "Efficiently Scaling Transformer
    Inference", sec. 2)."""
    from ..build import Shape, build
    from ..ops import Precision
    spec = _spec(model, overrides)
    src = seq or 1
    sh = Shape(batch=batch, seq=src, target_seq=1, training=False, kv_len=int(kv_len))
    return _tree_sum(build(spec, sh, Precision.of(precision)), field, kind, name)


def generation_ops_sum(model, field="matmul_flops", tokens=1, seq=None, start=1, batch=1, precision="fp16",
                       kind=None, name=None, **overrides):
    """Sum of decode_ops_sum over a whole generation: step t (t = start ..
    start + tokens - 1) attends over t cached positions. Exact sum, one decode
    tree per step (book 10.11: decoding cost sum_t (t d + L_enc d) per layer)."""
    return sum(decode_ops_sum(model, field, kv_len=t, seq=seq, batch=batch, precision=precision, kind=kind,
                              name=name, **overrides)
               for t in range(int(start), int(start) + int(tokens)))


def attention_ffn_crossover_seq(model, **overrides):
    """Sequence length n at which a layer's attention matmul FLOPs equal its
    FFN matmul FLOPs. Attention per layer is a*n + b*n^2 (Q/K/V/O projections
    linear in n; Q K^T and P V quadratic), the FFN c*n; both read off the
    engine's op tree at two lengths, then n* = (c - a) / b. Standard MHA with
    d_ff = 4d gives 8nd^2 + 4n^2 d = 16nd^2, n* = 2d (book 10.3, 10.5.1)."""
    from ..build import Shape, build
    from ..ops import Precision
    spec = _spec(model, overrides)
    p = Precision.of("fp32")

    def layer_sums(n):
        t = build(spec, Shape(batch=1, seq=n, target_seq=n, training=False), p)
        layers = spec.layers
        attn = _tree_sum(t, "matmul_flops", name=("encoder/layer/attn.", "decoder/layer/attn.")) / layers
        ffn = _tree_sum(t, "matmul_flops", name=("layer/fc1", "layer/fc2", "layer/gate_proj", "layer/up_proj")) / layers
        if getattr(spec, "structure", "") == "encoder-decoder":
            attn, ffn = attn / 2, ffn / 2
        return attn, ffn

    n1, n2 = 16, 32
    a1, f1 = layer_sums(n1)
    a2, _ = layer_sums(n2)
    b = (a2 / n2 - a1 / n1) / (n2 - n1)
    a = a1 / n1 - b * n1
    c = f1 / n1
    return (c - a) / b


def kv_cache_positions_ratio(tokens, prompt=0):
    """Token positions pushed through the layers to generate ``tokens`` tokens
    without a KV cache (every step re-processes the whole prefix: sum over
    t of prompt + t) divided by the positions processed with a cache (one per
    step): (prompt + (tokens + 1) / 2). Book 10.4.2 (KV cache)."""
    tokens = int(tokens)
    return sum(prompt + t for t in range(1, tokens + 1)) / tokens


def zero_state_bytes_by_part(params, precision="fp32", optimizer="adam", zero=0, dp=1, master_weights=True,
                             fp32_grads=False):
    """Per-device model-state bytes by part under ZeRO stage ``zero`` over ``dp``
    data-parallel ranks (Rajbhandari et al. 2020, sec. 5.1: stage 1 shards the
    optimizer states (and fp32 master weights), stage 2 also the gradients,
    stage 3 also the parameters). Returns weights, gradients, master,
    optimizer, total (bytes); same dtype rules as the engine (costmodel.memory)."""
    from ..book import _state_parts
    p = _state_parts(params, precision, optimizer, zero, dp, master_weights, fp32_grads)
    return {"weights": p["weight"], "gradients": p["grad"], "master": p["master"], "optimizer": p["optimizer"],
            "total": p["weight"] + p["grad"] + p["master"] + p["optimizer"]}


def padding_waste(lengths, pad_to=None):
    """Padding in a batch padded to ``pad_to`` (default: its longest sequence):
    pad_tokens = sum(pad_to - len_i), total_tokens = batch * pad_to,
    fraction = pad_tokens / total_tokens (book 11.9.4, dynamic batching)."""
    m = pad_to or max(lengths)
    pad = sum(m - n for n in lengths)
    total = m * len(lengths)
    return {"pad_tokens": pad, "total_tokens": total, "fraction": pad / total}


def segment_checkpoint_bytes(model, every=1, hardware="a100-80gb", **kw):
    """Activation memory of the transformer layers with checkpoints every
    ``every`` layers (Chen et al. 2016, "Training Deep Nets with Sublinear
    Memory Cost", sec. 3): keep the input of every segment (layers / every
    tensors of b*s*d), and while a segment is recomputed in backward hold its
    ``every`` layers' full saved tensors. Per-layer saved tensors and the layer
    input size come from the engine's op tree (one micro-batch, layers only).
    Returns stored, segment, total and full (no checkpointing) bytes."""
    from ..book import _estimate
    rep = _estimate(model, hardware, **kw)["_report"]
    layer_ops = [c for c in rep.ops if "/layer/" in c.path]
    if not layer_ops:
        from ..errors import CostModelError
        raise CostModelError("segment_checkpoint_bytes: model has no transformer layers")
    layers = max(c.count for c in layer_ops)
    full = sum(c.count * c.op.saved_bytes for c in layer_ops)
    per_layer = full / layers
    first = layer_ops[0].op
    d = first.dims
    from ..ops import Precision
    act = Precision.of(rep.workload["precision"]).act_bytes
    if first.kind == "norm":
        inp = d["rows"] * d["dim"] * act
    else:
        inp = d["tokens"] * d["d_in"] * act
    stored = math.ceil(layers / every) * inp
    segment = every * per_layer
    return {"stored": stored, "segment": segment, "total": stored + segment, "full": full}


# Cloud instances quoted by the book (11.14, Solution 11.7): GPUs per
# instance and the hardware spec of each GPU. Sources: AWS EC2 P4 instance
# page (p4d.24xlarge: 8x A100 40GB; p4de.24xlarge: 8x A100 80GB),
# https://aws.amazon.com/ec2/instance-types/p4/ ; Google Cloud accelerator-
# optimized machines (a2-highgpu-8g: 8x A100 40GB; a2-ultragpu-8g: 8x A100
# 80GB), https://cloud.google.com/compute/docs/gpus#a100-gpus ; Microsoft Learn
# NC A100 v4 series (Standard_NC96ads_A100_v4: 4x A100 80GB PCIe) and ND A100 v4
# series (Standard_ND96asr_v4: 8x A100 40GB),
# https://learn.microsoft.com/azure/virtual-machines/nc-a100-v4-series
CLOUD_INSTANCES = {
    "p4d.24xlarge": {"gpus": 8, "hardware": "a100-40gb"},
    "p4de.24xlarge": {"gpus": 8, "hardware": "a100-80gb"},
    "a2-highgpu-8g": {"gpus": 8, "hardware": "a100-40gb"},
    "a2-ultragpu-8g": {"gpus": 8, "hardware": "a100-80gb"},
    "Standard_NC96ads_A100_v4": {"gpus": 4, "hardware": "a100-80gb-pcie"},
    "Standard_ND96asr_v4": {"gpus": 8, "hardware": "a100-40gb"},
}


def cloud_instance(name):
    """GPUs per instance and GPU hardware spec name of a cloud instance type
    (table CLOUD_INSTANCES above, with its sources)."""
    try:
        return dict(CLOUD_INSTANCES[name])
    except KeyError:
        from ..errors import CostModelError
        raise CostModelError(f"unknown cloud instance {name!r} (known: {', '.join(CLOUD_INSTANCES)})") from None


FUNCTIONS = {
    "decode_ops_sum": decode_ops_sum,
    "generation_ops_sum": generation_ops_sum,
    "attention_ffn_crossover_seq": attention_ffn_crossover_seq,
    "kv_cache_positions_ratio": kv_cache_positions_ratio,
    "zero_state_bytes_by_part": zero_state_bytes_by_part,
    "padding_waste": padding_waste,
    "segment_checkpoint_bytes": segment_checkpoint_bytes,
    "cloud_instance": cloud_instance,
}
