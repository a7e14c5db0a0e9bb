"""The op library: one small registered formula per op kind.

Each formula takes the op's shape and the precision context and returns an
``Op`` holding, in one place:

* ``fwd_flops`` / ``bwd_flops`` -- FLOPs, 2 per multiply-accumulate;
* ``matmul_flops`` -- the forward FLOPs of matrix products and convolutions
  only (what ``torch.utils.flop_counter`` counts), and ``bwd_matmul_flops``;
* ``fwd_bytes`` / ``bwd_bytes`` -- HBM bytes read + written by an unfused kernel;
* ``params`` and ``param_shapes`` -- trainable parameters;
* ``saved_bytes`` -- tensors autograd keeps for the backward pass (training);
* ``op_class`` -- matmul | attention | conv | elementwise (selects the peak and
  efficiency used by the roofline).

Backward rules (stated once, here):
* matmul-like ops (linear, batched matmul, conv): 2x forward -- one product
  for the input gradient, one for the weight (or second operand) gradient;
  1x when the input needs no gradient (the first conv on an image).
  Book 2.3.1; Kaplan et al. 2020 (6ND = 2ND forward + 4ND backward).
* linear elementwise ops (dropout, scale, bias/mask add): 1x forward.
* residual add: 0 (the gradient is passed through).
* nonlinear elementwise ops, softmax and norms: 2x forward (re-evaluate the
  derivative, then multiply by the incoming gradient).
* embedding lookup: forward 0 FLOPs, backward one add per gathered element.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

# bytes per element of each compute precision
DTYPE_BYTES = {"fp64": 8, "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}
INDEX_BYTES = 8   # int64 token / pooling indices
MASK_BYTES = 1    # torch.bool dropout masks
STAT_BYTES = 4    # norm statistics are kept in fp32


@dataclass(frozen=True)
class Precision:
    """Compute dtype of matmuls, and storage sizes of activations and weights."""
    compute: str = "bf16"         # dtype whose peak the matmuls run at
    act_bytes: int = 2            # activations
    weight_bytes: int = 2         # weights as read by the kernels
    vector_dtype: str = "bf16"    # dtype of elementwise work

    @staticmethod
    def of(name: str) -> "Precision":
        if name in ("fp32", "tf32"):
            return Precision(name, 4, 4, "fp32")
        if name in ("fp16", "bf16"):
            return Precision(name, 2, 2, name)
        if name == "fp8":   # fp8 matmuls, bf16 activations around them (Transformer Engine style)
            return Precision("fp8", 2, 1, "bf16")
        if name == "fp64":
            return Precision("fp64", 8, 8, "fp32")
        raise ValueError(name)


@dataclass
class Op:
    kind: str
    name: str
    op_class: str
    fwd_flops: float = 0.0
    bwd_flops: float = 0.0
    matmul_flops: float = 0.0
    bwd_matmul_flops: float = 0.0
    fwd_bytes: float = 0.0
    bwd_bytes: float = 0.0
    params: int = 0
    param_shapes: tuple = ()
    saved_bytes: float = 0.0
    quadratic: bool = False      # cost grows with seq^2 (attention score terms)
    dims: dict = field(default_factory=dict)
    formula: str = ""


REGISTRY: dict[str, Callable[..., Op]] = {}


def register(kind: str):
    def deco(fn):
        REGISTRY[kind] = fn
        fn.kind = kind
        return fn
    return deco


def make(op_kind: str, name: str, p: Precision, /, **dims) -> Op:
    """Build op ``kind`` named ``name`` from its registered formula."""
    return REGISTRY[op_kind](name, p, **dims)


# --- matrix products -------------------------------------------------------
@register("linear")
def linear(name, p, *, tokens, d_in, d_out, bias=True, saves_input=True, input_grad=True):
    """y = x W^T + b over `tokens` rows. FLOPs 2*tokens*d_in*d_out (book 1.2.2)."""
    mm = 2.0 * tokens * d_in * d_out
    a, w = p.act_bytes, p.weight_bytes
    bias_f = tokens * d_out if bias else 0
    shapes = ((d_out, d_in),) + (((d_out,),) if bias else ())
    return Op("linear", name, "matmul",
              fwd_flops=mm + bias_f, bwd_flops=mm * (2 if input_grad else 1) + bias_f,
              matmul_flops=mm, bwd_matmul_flops=mm * (2 if input_grad else 1),
              fwd_bytes=tokens * d_in * a + d_in * d_out * w + tokens * d_out * a,
              bwd_bytes=(2 * tokens * d_out * a + 2 * d_in * d_out * w + tokens * d_in * a
                         + (tokens * d_in * a + d_in * d_out * w if input_grad else 0)),
              params=d_in * d_out + (d_out if bias else 0), param_shapes=shapes,
              saved_bytes=tokens * d_in * a if saves_input else 0,
              dims=dict(tokens=tokens, d_in=d_in, d_out=d_out, bias=bias),
              formula="2*tokens*d_in*d_out")


@register("bmm")
def bmm(name, p, *, batch, m, k, n, saves=(True, True), quadratic=False, op_class="attention"):
    """Batched product of (batch, m, k) by (batch, k, n): 2*batch*m*k*n FLOPs.
    Used for attention scores (QK^T) and values (PV) of standard attention."""
    mm = 2.0 * batch * m * k * n
    a = p.act_bytes
    sa, sb, so = batch * m * k, batch * k * n, batch * m * n
    saved = (sa if saves[0] else 0) + (sb if saves[1] else 0)
    return Op("bmm", name, op_class, fwd_flops=mm, bwd_flops=2 * mm,
              matmul_flops=mm, bwd_matmul_flops=2 * mm,
              fwd_bytes=(sa + sb + so) * a, bwd_bytes=(2 * so + 2 * sa + 2 * sb) * a,
              saved_bytes=saved * a, quadratic=quadratic,
              dims=dict(batch=batch, m=m, k=k, n=n), formula="2*batch*m*k*n")


@register("flash_attention")
def flash_attention(name, p, *, batch, heads, kv_heads, q_len, kv_len, d_head, causal=False):
    """Fused attention (FlashAttention, Dao et al. 2022; FA-2 2023).

    Forward FLOPs: QK^T and PV = 4*b*h*q*kv*d_head, halved when a causal
    kernel skips the masked blocks. Backward: 5 products where the forward has
    2 (recompute S, then dV, dP, dQ, dK) = 2.5x forward. HBM traffic is only
    Q, K, V, O (+ dO, dQ, dK, dV); saved: Q, K, V, O and the fp32 row
    log-sum-exp -- no seq x seq tensor.
    """
    frac = 0.5 if causal else 1.0
    mm = 4.0 * batch * heads * q_len * kv_len * d_head * frac
    sm = 5.0 * batch * heads * q_len * kv_len * frac
    a = p.act_bytes
    q = batch * heads * q_len * d_head
    kv = batch * kv_heads * kv_len * d_head
    return Op("flash_attention", name, "attention",
              fwd_flops=mm + sm, bwd_flops=2.5 * mm + 2 * sm,
              matmul_flops=mm, bwd_matmul_flops=2.5 * mm,
              fwd_bytes=(2 * q + 2 * kv) * a, bwd_bytes=(4 * q + 4 * kv) * a,
              saved_bytes=(2 * q + 2 * kv) * a + batch * heads * q_len * STAT_BYTES,
              quadratic=True,
              dims=dict(batch=batch, heads=heads, q_len=q_len, kv_len=kv_len, d_head=d_head, causal=causal),
              formula="4*b*h*q*kv*d_head" + (" / 2 (causal)" if causal else ""))


@register("conv2d")
def conv2d(name, p, *, n, c_in, h, w, c_out, kernel, stride=1, padding=0, groups=1, bias=True,
           input_grad=True):
    """2-D convolution. FLOPs 2*N*H_out*W_out*C_out*(C_in/g)*k*k (book 5.3.1)."""
    ho, wo = conv_out(h, kernel, stride, padding), conv_out(w, kernel, stride, padding)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"{name}: {h}x{w} input gives an empty {ho}x{wo} output "
                         f"(kernel {kernel}, stride {stride}, padding {padding})")
    mm = 2.0 * n * ho * wo * c_out * (c_in // groups) * kernel * kernel
    a, wb = p.act_bytes, p.weight_bytes
    wn = c_out * (c_in // groups) * kernel * kernel
    xin, yout = n * c_in * h * w, n * c_out * ho * wo
    bias_f = yout if bias else 0
    return Op("conv2d", name, "conv",
              fwd_flops=mm + bias_f, bwd_flops=mm * (2 if input_grad else 1) + bias_f,
              matmul_flops=mm, bwd_matmul_flops=mm * (2 if input_grad else 1),
              fwd_bytes=(xin + yout) * a + wn * wb,
              bwd_bytes=(2 * yout + xin + (xin if input_grad else 0)) * a + (2 + (1 if input_grad else 0)) * wn * wb,
              params=wn + (c_out if bias else 0),
              param_shapes=((c_out, c_in // groups, kernel, kernel),) + (((c_out,),) if bias else ()),
              saved_bytes=xin * a,
              dims=dict(n=n, c_in=c_in, h=h, w=w, c_out=c_out, kernel=kernel, stride=stride,
                        padding=padding, groups=groups, h_out=ho, w_out=wo),
              formula="2*N*H_out*W_out*C_out*(C_in/groups)*k^2")


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """floor((size + 2p - d(k-1) - 1)/s) + 1 (book 5.1.1; torch.nn.Conv2d docs)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@register("rnn")
def rnn(name, p, *, cell, batch, seq, d_in, hidden, directions=1, bias=True, input_grad=True):
    """One recurrent layer (all directions), unrolled over `seq` steps.

    gates g = 4 (LSTM), 3 (GRU), 1 (tanh RNN). Matmul FLOPs per step and
    direction: 2*batch*g*hidden*(d_in + hidden) (input and recurrent
    projections; book 6.2.1). Params per direction (torch.nn.LSTM/GRU/RNN):
    g*hidden*(d_in + hidden) + 2*g*hidden with both bias vectors.
    Elementwise per step: LSTM ~ 4 nonlinearities + 3 products/sums per hidden
    unit per gate-set (counted as 10*hidden), GRU 10*hidden, RNN 2*hidden.
    Saved: per step the layer input, previous hidden state and gate
    activations (torch's fused cell keeps g*hidden workspace + cell state).
    Backward matmuls: 2x forward, less the products whose result nobody
    needs: the gradient of the zero initial state h0 (one recurrent product
    per direction), and the input gradient when the input is data
    (``input_grad=False``: first layer without an embedding), as torch's
    autograd skips them (checked by costmodel/validate/exact.py).
    """
    g = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    per_dir_params = g * hidden * (d_in + hidden) + (2 * g * hidden if bias else 0)
    mm = 2.0 * batch * seq * g * hidden * (d_in + hidden) * directions
    bwd_mm = 2 * mm - 2.0 * batch * g * hidden * hidden * directions \
        - (0.0 if input_grad else 2.0 * batch * seq * g * hidden * d_in * directions)
    ew = {"lstm": 10, "gru": 10, "rnn": 2}[cell] * batch * seq * hidden * directions
    a, w = p.act_bytes, p.weight_bytes
    state = {"lstm": 2, "gru": 1, "rnn": 1}[cell]
    saved = batch * seq * directions * (d_in + hidden * (g + state)) * a
    shapes = []
    for _ in range(directions):
        shapes += [(g * hidden, d_in), (g * hidden, hidden)]
        if bias:
            shapes += [(g * hidden,), (g * hidden,)]
    return Op("rnn", name, "matmul",
              fwd_flops=mm + ew, bwd_flops=bwd_mm + 2 * ew, matmul_flops=mm, bwd_matmul_flops=bwd_mm,
              fwd_bytes=(batch * seq * (d_in + hidden * directions) + batch * seq * g * hidden * directions) * a
              + per_dir_params * directions * w * seq,   # weights re-read every step (no persistence)
              bwd_bytes=2 * ((batch * seq * (d_in + hidden * directions) + batch * seq * g * hidden * directions) * a
                             + per_dir_params * directions * w * seq),
              params=per_dir_params * directions, param_shapes=tuple(shapes), saved_bytes=saved,
              dims=dict(cell=cell, batch=batch, seq=seq, d_in=d_in, hidden=hidden, directions=directions),
              formula="2*b*seq*g*h*(d_in+h)*dirs")


# --- elementwise, reductions, norms ----------------------------------------
def _elementwise(kind, name, p, n, flops_per, bwd_mult, saved, reads=1, writes=1, bwd_reads=2, bwd_writes=1,
                 params=0, shapes=(), quadratic=False, formula=""):
    a = p.act_bytes
    return Op(kind, name, "elementwise", fwd_flops=flops_per * n, bwd_flops=bwd_mult * flops_per * n,
              fwd_bytes=(reads + writes) * n * a, bwd_bytes=(bwd_reads + bwd_writes) * n * a,
              params=params, param_shapes=shapes, saved_bytes=saved, quadratic=quadratic,
              dims=dict(elements=n), formula=formula or f"{flops_per}*elements")


# FLOPs per element of activation functions (forward); tanh-approximate GELU
# as in GPT-2 / BERT, and exact erf GELU, cost about the same.
ACT_FLOPS = {"relu": 1, "gelu": 8, "gelu_new": 8, "silu": 4, "tanh": 4, "sigmoid": 4,
             # MobileNetV3 (Howard et al. 2019, sec. 5.2): relu6(x) = min(max(x, 0), 6);
             # hardsigmoid(x) = relu6(x + 3) / 6; hardswish(x) = x * hardsigmoid(x)
             "relu6": 2, "hardsigmoid": 4, "hardswish": 5}


@register("activation")
def activation(name, p, *, elements, fn="gelu", quadratic=False):
    """Pointwise nonlinearity; saves its input (ReLU: its output; same size)."""
    return _elementwise("activation", name, p, elements, ACT_FLOPS[fn], 2, elements * p.act_bytes,
                        quadratic=quadratic, formula=f"{ACT_FLOPS[fn]}*elements ({fn})")


@register("glu")
def glu(name, p, *, elements, fn="silu"):
    """act(gate) * up (SwiGLU / GeGLU, Shazeer 2020) over `elements` outputs.
    Saves gate, act(gate) and up."""
    f = ACT_FLOPS[fn] + 1
    return _elementwise("glu", name, p, elements, f, 2, 3 * elements * p.act_bytes, reads=2, writes=1,
                        bwd_reads=4, bwd_writes=2, formula=f"({ACT_FLOPS[fn]}+1)*elements ({fn} gate * up)")


@register("dropout")
def dropout(name, p, *, elements, quadratic=False):
    """x * mask / (1-p); saves the 1-byte bool mask (torch native_dropout).
    Forward reads x, writes y and the mask; backward reads dy and the mask,
    writes dx: (2*act + 1) bytes per element each way."""
    op = _elementwise("dropout", name, p, elements, 1, 1, elements * MASK_BYTES, quadratic=quadratic,
                      formula="1*elements; mask 1 byte/element")
    op.fwd_bytes = op.bwd_bytes = elements * (2 * p.act_bytes + MASK_BYTES)
    return op


@register("scale")
def scale(name, p, *, elements, quadratic=False):
    """Multiply or add a constant / broadcast mask (attention scaling, masking)."""
    return _elementwise("scale", name, p, elements, 1, 1, 0, quadratic=quadratic, bwd_reads=1)


@register("add")
def add(name, p, *, elements):
    """Residual add: 1 FLOP/element forward, gradient passed through."""
    return _elementwise("add", name, p, elements, 1, 0, 0, reads=2, writes=1, bwd_reads=0, bwd_writes=0)


@register("softmax")
def softmax(name, p, *, rows, cols, quadratic=False, out_bytes=None, saves_output=True):
    """Row softmax: max, subtract, exp, sum, divide = 5 FLOPs/element (book 3.3.2);
    saves its output. ``out_bytes`` overrides the element size (fp32 logits)."""
    n = rows * cols
    b = out_bytes or p.act_bytes
    op = _elementwise("softmax", name, p, n, 5, 2, n * b if saves_output else 0, quadratic=quadratic,
                      formula="5*rows*cols")
    op.fwd_bytes, op.bwd_bytes = 2 * n * b, 3 * n * b
    op.dims = dict(rows=rows, cols=cols)
    return op


@register("norm")
def norm(name, p, *, rows, dim, kind="layernorm", bias=True):
    """LayerNorm (8 FLOPs/element: mean, centre, square, sum, scale by rstd,
    affine) or RMSNorm (5: square, sum, scale, weight). Saves its input and
    fp32 per-row statistics (mean and rstd; rstd only for RMSNorm), as the
    fused kernels do (torch native_layer_norm / apex / FlashAttention RMSNorm)."""
    n = rows * dim
    per = 8 if kind == "layernorm" else 5
    stats = (2 if kind == "layernorm" else 1) * rows * STAT_BYTES
    nparams = dim + (dim if (bias and kind == "layernorm") else 0)
    shapes = ((dim,),) + (((dim,),) if (bias and kind == "layernorm") else ())
    op = _elementwise("norm", name, p, n, per, 2, n * p.act_bytes + stats, params=nparams, shapes=shapes,
                      formula=f"{per}*rows*dim ({kind})")
    op.dims = dict(rows=rows, dim=dim, kind=kind)
    return op


@register("batchnorm")
def batchnorm(name, p, *, n, channels, hw):
    """BatchNorm2d (training statistics): 8 FLOPs/element like LayerNorm;
    params 2*C (running mean/var are buffers, not parameters); saves input
    and per-channel fp32 mean and invstd."""
    e = n * channels * hw
    op = _elementwise("batchnorm", name, p, e, 8, 2, e * p.act_bytes + 2 * channels * STAT_BYTES,
                      params=2 * channels, shapes=((channels,), (channels,)), formula="8*N*C*H*W")
    op.dims = dict(n=n, channels=channels, hw=hw)
    return op


@register("pool")
def pool(name, p, *, n, channels, h_out, w_out, window, kind="max", h_in=None, w_in=None, saves_input=True):
    """Max/avg pooling: one compare/add per window element per output.
    Max pooling saves its input and int64 argmax indices; avg pooling saves
    its input (torch avg_pool2d / _adaptive_avg_pool2d backward take ``self``),
    except a global average to 1x1, which torch computes as ``mean`` and which
    keeps nothing (``saves_input=False``)."""
    out = n * channels * h_out * w_out
    inp = n * channels * (h_in or h_out) * (w_in or w_out)
    saved = (inp * p.act_bytes + out * INDEX_BYTES) if kind == "max" else (inp * p.act_bytes if saves_input else 0)
    a = p.act_bytes
    return Op("pool", name, "elementwise", fwd_flops=out * window, bwd_flops=out * window,
              fwd_bytes=(inp + out) * a, bwd_bytes=(out + inp) * a + (out * INDEX_BYTES if kind == "max" else 0),
              saved_bytes=saved, dims=dict(n=n, channels=channels, h_out=h_out, w_out=w_out, window=window),
              formula="out_elements*window")


@register("embedding")
def embedding(name, p, *, tokens, rows, dim, lookup=True):
    """Table of rows x dim. Forward: gather (0 FLOPs, tokens*dim elements moved);
    backward: scatter-add into the weight gradient (1 FLOP per element).
    Saves the int64 indices. ``lookup=False``: a parameter added as a whole
    (ViT position embedding), costing one add per element."""
    a, w = p.act_bytes, p.weight_bytes
    e = tokens * dim
    return Op("embedding", name, "elementwise",
              fwd_flops=0 if lookup else e, bwd_flops=e,
              fwd_bytes=e * w + tokens * INDEX_BYTES + e * a if lookup else 2 * e * a + rows * dim * w,
              bwd_bytes=2 * e * a + rows * dim * w,
              params=rows * dim, param_shapes=((rows, dim),),
              saved_bytes=tokens * INDEX_BYTES if lookup else 0,
              dims=dict(tokens=tokens, rows=rows, dim=dim), formula="gather tokens*dim")


@register("param")
def param(name, p, *, shape):
    """A bare parameter (class token, relative-position bias table)."""
    n = math.prod(shape)
    return Op("param", name, "elementwise", params=n, param_shapes=(tuple(shape),), dims=dict(shape=shape))


@register("rotary")
def rotary(name, p, *, elements):
    """Rotary position embedding on q and k: x*cos + rotate_half(x)*sin,
    3 FLOPs/element (Su et al. 2021). Saves nothing beyond cos/sin tables."""
    return _elementwise("rotary", name, p, elements, 3, 1, 0, reads=1, writes=1,
                        formula="3*elements of q and k")


@register("cross_entropy")
def cross_entropy(name, p, *, rows, vocab):
    """Loss over fp32 logits: log-softmax (5 FLOPs/element) + NLL gather.
    Logits are upcast to fp32 first (HF: logits.float()); log_softmax saves
    its fp32 output rows*vocab*4 bytes; nll_loss keeps the int64 targets and
    its fp32 total_weight scalar (torch derivatives.yaml: nll_loss_backward
    takes target and total_weight; checked by costmodel/validate/exact.py)."""
    n = rows * vocab
    return Op("cross_entropy", name, "elementwise", fwd_flops=5 * n, bwd_flops=2 * n,
              fwd_bytes=n * p.act_bytes + 2 * n * 4, bwd_bytes=3 * n * 4,
              saved_bytes=n * 4 + rows * INDEX_BYTES + STAT_BYTES, dims=dict(rows=rows, vocab=vocab),
              formula="5*rows*vocab (fp32)")


@register("channel_scale")
def channel_scale(name, p, *, elements, scales, param=False):
    """y = x * s, s broadcast over the spatial positions: the squeeze-excitation
    gate (s of shape (N, C, 1, 1), ``scales`` = N*C; Hu et al. 2018 eq. 4) or a
    ConvNeXt layer scale (a (C, 1, 1) parameter, ``param=True``; Liu et al.
    2022; Touvron et al. 2021 "LayerScale"). Forward 1 FLOP/element; backward
    dx = g*s (1) and ds = sum over H*W of g*x (2): 3 FLOPs/element. Saves x
    (needed for ds) and, when s is an activation, s."""
    a = p.act_bytes
    e = elements
    op = Op("channel_scale", name, "elementwise", fwd_flops=e, bwd_flops=3 * e,
            fwd_bytes=2 * e * a + scales * (p.weight_bytes if param else a),
            bwd_bytes=3 * e * a + 2 * scales * (p.weight_bytes if param else a),
            params=scales if param else 0, param_shapes=((scales, 1, 1),) if param else (),
            saved_bytes=e * a + (0 if param else scales * a), dims=dict(elements=e, scales=scales),
            formula="1*elements (broadcast multiply); backward 3*elements")
    return op


@register("concat")
def concat(name, p, *, elements):
    """torch.cat along channels (Inception, DenseNet, SqueezeNet Fire): 0 FLOPs,
    every element read once and written once; backward hands each input a view
    (narrow) of the output gradient. Saves nothing (cat's backward needs only sizes)."""
    return Op("concat", name, "elementwise", fwd_bytes=2 * elements * p.act_bytes, bwd_bytes=0.0,
              dims=dict(elements=elements), formula="copy, 0 FLOPs")
