"""Closed forms needed by the book figures of chapters 4-6 (book lines 2503-3742).

Each function is a general formula with its source; where the op library
(costmodel/ops.py) or the builders (costmodel/build.py) describe the object,
the function is built on them so the engine's own accounting is what is checked.
"""
from __future__ import annotations

from ..ops import Precision, make

_FP32 = Precision.of("fp32")


def _params_of(ops) -> int:
    return int(sum(o.params for o in ops))


# --- recurrent networks (book 6.2, eq. 6.9-6.22) ----------------------------------------
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_STATES = {"lstm": 2, "gru": 1, "rnn": 1}


def rnn_params_single_bias(cell, d_in, hidden, directions=1):
    """Parameters of one recurrent layer written with ONE bias vector per gate,
    as in the book's equations 6.9-6.13 (LSTM) and 6.19-6.21 (GRU):
    g * (hidden * (d_in + hidden) + hidden), g = 4 (LSTM), 3 (GRU), 1 (tanh RNN).
    Built on the op library's rnn op without biases (torch.nn.LSTM/GRU weights)
    plus one bias per gate; torch itself keeps two (b_ih and b_hh)."""
    weights = make("rnn", "rnn", _FP32, cell=cell, batch=1, seq=1, d_in=d_in, hidden=hidden,
                   directions=directions, bias=False).params
    return weights + _GATES[cell] * hidden * directions


def recurrent_state_bytes(cell, batch, seq, hidden, directions=1, layers=1, bytes_per=4):
    """Bytes of the per-step recurrent states kept for backpropagation through
    time: LSTM keeps h_t and c_t, GRU and tanh RNN keep h_t (book 6.2.1, line
    3476: 2*B*n*h*4 bytes for an FP32 LSTM; torch.nn.LSTM returns both h and c).
    states * batch * seq * hidden * directions * layers * bytes_per."""
    return float(_STATES[cell] * batch * seq * hidden * directions * layers * bytes_per)


# --- convolution algorithms (book 5.3.3) ------------------------------------------------
def winograd_mult_reduction(m=2, r=3):
    """Multiplication saving of Winograd minimal filtering F(m x m, r x r)
    (Lavin & Gray 2016, 'Fast Algorithms for Convolutional Neural Networks',
    sec. 4): direct convolution needs m^2 r^2 multiplications per m x m output
    tile, Winograd (m + r - 1)^2; F(2x2, 3x3): 36 / 16 = 2.25."""
    return (m * m * r * r) / float((m + r - 1) ** 2)


# --- transformer layers (book 4.3.5, 5.4.2, 6.2.1) --------------------------------------
def encoder_layer_matmul_flops(seq, d_model, heads, d_ff, part="all", batch=1, activation="gelu"):
    """Forward matmul FLOPs of ONE post-norm encoder layer, built by the engine's
    transformer builder (costmodel.build): Q, K, V, O projections 8*b*n*d^2,
    scores and values 4*b*n^2*d, FFN 4*b*n*d*d_ff (Vaswani et al. 2017;
    book 4.3.5). ``part``: 'attention' (projections + QK^T + AV), 'ffn' or 'all'."""
    from ..build import Shape, build
    from ..specs.model import TransformerSpec
    spec = TransformerSpec(arch="transformer", name="layer", structure="encoder", layers=1, d_model=d_model,
                           heads=heads, d_ff=d_ff, vocab_size=1, max_positions=max(seq, 1), position="none",
                           activation=activation, lm_head=False, final_norm=False, dropout=0.0)
    tree = build(spec, Shape(batch=batch, seq=seq, training=False), _FP32)
    tot = 0.0
    for path, count, op in tree.walk():
        if "/layer/" not in path:
            continue
        leaf = path.rsplit("/", 1)[-1]
        is_attn = leaf.startswith("attn.")
        if part == "attention" and not is_attn:
            continue
        if part == "ffn" and is_attn:
            continue
        tot += count * op.matmul_flops
    return tot


# --- model / op inventory ---------------------------------------------------------------
def model_op_count(model, kind=None, name=None, hardware="a100-80gb", **workload):
    """How many ops of ``kind`` (and whose path contains one of ``name``) the
    engine's tree of ``model`` holds, repeats counted (e.g. dropout sites of a
    forward pass; book 4.7.6)."""
    from ..book import select_ops
    return sum(c.count for c in select_ops(model, kind, name, hardware, **workload))


def model_spec_value(model, field):
    """A hyperparameter of a shipped model spec (models/*.yaml), e.g.
    model_spec_value('gpt2', 'max_positions') -> 1024 (HF GPT2Config n_positions)."""
    from ..catalog import load_model
    spec = load_model(model)
    v = spec
    for k in str(field).split("."):
        v = getattr(v, k)
    return v


# --- vision models without a models/*.yaml (parameter counts only) --------------------
# torchvision.models.efficientnet._efficientnet_conf('efficientnet_b0'):
# (expand_ratio, kernel, stride, in, out, layers) of the seven MBConv stages
_EFFNET_B0 = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


def efficientnet_param_count(num_classes=1000):
    """Parameters of EfficientNet-B0 (Tan & Le 2019, Table 1) exactly as
    torchvision.models.efficientnet_b0 builds it: 3x3/s2 stem conv (32) + BN;
    MBConv blocks = [1x1 expand conv + BN] + depthwise kxk conv + BN +
    squeeze-excitation (two 1x1 convs with bias, squeeze = max(1, in // 4)) +
    1x1 project conv + BN; 1x1 head conv to 1280 + BN; Linear(1280, classes).
    Convs have no bias (followed by BN); BN has 2 parameters per channel.
    Summed from the op library's conv2d / batchnorm / linear ops."""
    p = _FP32
    ops = []

    def conv(cin, cout, k, groups=1, bias=False):
        ops.append(make("conv2d", "c", p, n=1, c_in=cin, h=k, w=k, c_out=cout, kernel=k, groups=groups, bias=bias))

    def bn(c):
        ops.append(make("batchnorm", "bn", p, n=1, channels=c, hw=1))

    conv(3, 32, 3)
    bn(32)
    for expand, k, _stride, cin, cout, n in _EFFNET_B0:
        for i in range(n):
            c_in = cin if i == 0 else cout
            exp = c_in * expand
            if exp != c_in:
                conv(c_in, exp, 1)
                bn(exp)
            conv(exp, exp, k, groups=exp)
            bn(exp)
            sq = max(1, c_in // 4)
            conv(exp, sq, 1, bias=True)
            conv(sq, exp, 1, bias=True)
            conv(exp, cout, 1)
            bn(cout)
    conv(320, 1280, 1)
    bn(1280)
    ops.append(make("linear", "fc", p, tokens=1, d_in=1280, d_out=num_classes))
    return _params_of(ops)


_SWIN = {"t": (96, (2, 2, 6, 2), (3, 6, 12, 24)), "s": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
         "b": (128, (2, 2, 18, 2), (4, 8, 16, 32))}


def swin_param_count(variant="t", window=7, patch=4, mlp_ratio=4, num_classes=1000):
    """Parameters of a Swin Transformer (Liu et al. 2021, sec. 3.3) exactly as
    torchvision.models.swin_t/s/b builds it: 4x4/s4 patch conv (with bias) +
    LayerNorm; per block LN, qkv Linear(C, 3C) and proj Linear(C, C) with
    biases, a relative-position bias table of (2*window-1)^2 x heads, LN, MLP
    C -> 4C -> C with biases; patch merging LN(4C) + Linear(4C, 2C, no bias)
    between stages; final LN and Linear(8C, classes). Summed from the op
    library's conv2d / norm / linear / param ops."""
    c0, depths, heads = _SWIN[variant]
    p = _FP32
    ops = [make("conv2d", "patch", p, n=1, c_in=3, h=patch, w=patch, c_out=c0, kernel=patch, stride=patch),
           make("norm", "ln", p, rows=1, dim=c0)]
    c = c0
    for s, (depth, h) in enumerate(zip(depths, heads)):
        for _ in range(depth):
            ops += [make("norm", "ln1", p, rows=1, dim=c),
                    make("linear", "qkv", p, tokens=1, d_in=c, d_out=3 * c),
                    make("linear", "proj", p, tokens=1, d_in=c, d_out=c),
                    make("param", "rel_bias", p, shape=((2 * window - 1) ** 2, h)),
                    make("norm", "ln2", p, rows=1, dim=c),
                    make("linear", "fc1", p, tokens=1, d_in=c, d_out=mlp_ratio * c),
                    make("linear", "fc2", p, tokens=1, d_in=mlp_ratio * c, d_out=c)]
        if s < len(depths) - 1:
            ops += [make("norm", "merge_ln", p, rows=1, dim=4 * c),
                    make("linear", "merge", p, tokens=1, d_in=4 * c, d_out=2 * c, bias=False)]
            c *= 2
    ops += [make("norm", "final_ln", p, rows=1, dim=c), make("linear", "head", p, tokens=1, d_in=c, d_out=num_classes)]
    return _params_of(ops)


# --- on-chip memory not in the hardware specs ----------------------------------------------
_SM_L1 = {
    # combined L1 data cache / shared memory per SM, bytes
    "v100": 128 * 1024,   # Volta whitepaper (2017), 'Volta SM': 128 KB combined L1/shared per SM
    "a100": 192 * 1024,   # NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020), Table 3: 192 KB per SM
    "h100": 256 * 1024,   # NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022), 'H100 SM': 256 KB per SM
}


def sm_l1_shared_bytes(gpu):
    """Combined L1 data cache / shared memory per streaming multiprocessor, in
    bytes (the hardware specs carry only L2): V100 128 KiB (Volta whitepaper),
    A100 192 KiB (Ampere whitepaper, Table 3), H100 256 KiB (Hopper whitepaper)."""
    key = str(gpu).split("-")[0]
    if key not in _SM_L1:
        from ..errors import CostModelError
        raise CostModelError(f"no L1 size recorded for {gpu!r} (expected one of: {', '.join(_SM_L1)})")
    return float(_SM_L1[key])


FUNCTIONS = {
    "rnn_params_single_bias": rnn_params_single_bias,
    "recurrent_state_bytes": recurrent_state_bytes,
    "winograd_mult_reduction": winograd_mult_reduction,
    "encoder_layer_matmul_flops": encoder_layer_matmul_flops,
    "model_op_count": model_op_count,
    "model_spec_value": model_spec_value,
    "efficientnet_param_count": efficientnet_param_count,
    "swin_param_count": swin_param_count,
    "sm_l1_shared_bytes": sm_l1_shared_bytes,
}
