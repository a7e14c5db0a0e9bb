"""Closed forms needed by the book figures of chapters 7-9 (attention
mechanisms, multi-head attention, efficient attention; book lines 3743-5510).

Every function is built on the op library (costmodel/ops.py) so that the
catalogue's numbers come from the same formulas the engine uses: the
seq x seq probability tensor is the ``softmax`` op's saved output, attention
products are ``bmm`` ops, projections are ``linear`` ops.
"""
from __future__ import annotations

from ..ops import Precision, make


def _p(precision):
    return Precision.of(precision)


def attention_matrix_bytes(q_len, kv_len=None, heads=1, batch=1, layers=1, precision="fp32"):
    """Bytes of the attention-probability tensors: layers * batch * heads *
    q_len * kv_len elements (book 8.1.1, 9.9.5). Taken from the engine's
    ``softmax`` op, whose saved output is exactly this tensor.
    ``kv_len`` = keys attended per query: q_len (full attention), the window w
    (local attention, Beltagy et al. 2020), sqrt(n) (strided sparse attention,
    Child et al. 2019) or the projected rank r (Linformer, Wang et al. 2020)."""
    kv = q_len if kv_len is None else kv_len
    sm = make("softmax", "probs", _p(precision), rows=batch * heads * q_len, cols=kv)
    return layers * sm.saved_bytes


def attention_matrix_elements(q_len, kv_len=None, heads=1, batch=1, layers=1):
    """Elements of the attention-score matrices: layers * batch * heads *
    q_len * kv_len (the rows x cols of the engine's ``softmax`` op; book 8.1.1)."""
    kv = q_len if kv_len is None else kv_len
    sm = make("softmax", "probs", _p("fp32"), rows=batch * heads * q_len, cols=kv)
    return layers * sm.dims["rows"] * sm.dims["cols"]


def attention_core_flops(q_len, kv_len=None, heads=1, d_head=64, batch=1, d_v=None):
    """FLOPs of the two attention products, scores QK^T (2 q kv d_k) and
    values PV (2 q kv d_v), per head and sequence (Vaswani et al. 2017 eq. 1;
    book 7.3.2, 8.10). Two ``bmm`` ops of the op library; ``kv_len`` as in
    ``attention_matrix_bytes`` (window, sqrt(n), rank r for efficient
    variants, book 9.9.5). Scale/mask/softmax FLOPs (~7 per score) excluded."""
    kv = q_len if kv_len is None else kv_len
    dv = d_head if d_v is None else d_v
    p = _p("fp32")
    s = make("bmm", "scores", p, batch=batch * heads, m=q_len, k=d_head, n=kv)
    v = make("bmm", "values", p, batch=batch * heads, m=q_len, k=kv, n=dv)
    return s.matmul_flops + v.matmul_flops


def linear_attention_flops(n, heads=1, d_k=64, d_v=None, batch=1):
    """Linear attention (Katharopoulos et al. 2020, eq. 6): per head the
    state S = phi(K)^T V (d_k x d_v, 2 n d_k d_v FLOPs) and the output
    phi(Q) S (2 n d_k d_v FLOPs): 4 n d_k d_v per head, two ``bmm`` ops.
    Feature-map and normaliser FLOPs excluded (book 9.9.3)."""
    dv = d_k if d_v is None else d_v
    p = _p("fp32")
    state = make("bmm", "kv_state", p, batch=batch * heads, m=d_k, k=n, n=dv)
    out = make("bmm", "q_state", p, batch=batch * heads, m=n, k=d_k, n=dv)
    return state.matmul_flops + out.matmul_flops


def linear_attention_state_bytes(heads=1, d_k=64, d_v=None, batch=1, layers=1, precision="fp32"):
    """Bytes of the linear-attention state S = phi(K)^T V: one d_k x d_v
    matrix per head, independent of sequence length (Katharopoulos et al.
    2020, sec. 3.2; book 9.9.3): layers * batch * heads * d_k * d_v * bytes.
    Elements stored at the engine's activation precision (ops.Precision)."""
    dv = d_k if d_v is None else d_v
    return layers * batch * heads * d_k * dv * _p(precision).act_bytes


def bahdanau_attention_flops(n, m, d_a, d_s, d_h, hoist=False, elementwise=True, precision="fp32"):
    """Additive (Bahdanau et al. 2015) alignment scores e_ti = v^T tanh(W1 s_t
    + W2 h_i) for m decoder x n encoder positions (book 7.2 eq. 7.8, 7.4.1).

    hoist=False (the book's per-pair count): W1 s_t and W2 h_i recomputed for
    every pair, 2 n m d_a (d_s + d_h); hoist=True: W1 s over m rows and W2 h
    over n rows once, 2 d_a (m d_s + n d_h). Elementwise per pair (op library):
    add d_a, tanh 4 d_a (ACT_FLOPS; the book counts ~3 d_a), v^T dot 2 d_a;
    the book's total is 2 n m d_a (d_s + d_h + 3), ours 2 n m d_a (d_s + d_h + 3.5).
    elementwise=False: the projection products only (book 7.4.1, 524,288 per score)."""
    p = _p(precision)
    pairs = n * m
    rows_s, rows_h = (m, n) if hoist else (pairs, pairs)
    f = (make("linear", "W1", p, tokens=rows_s, d_in=d_s, d_out=d_a, bias=False).fwd_flops
         + make("linear", "W2", p, tokens=rows_h, d_in=d_h, d_out=d_a, bias=False).fwd_flops)
    if elementwise:
        f += (make("add", "sum", p, elements=pairs * d_a).fwd_flops
              + make("activation", "tanh", p, elements=pairs * d_a, fn="tanh").fwd_flops
              + make("linear", "v", p, tokens=pairs, d_in=d_a, d_out=1, bias=False).fwd_flops)
    return f


def bahdanau_attention_params(d_a, d_s, d_h):
    """Parameters of additive attention: W1 (d_a x d_s), W2 (d_a x d_h), v (d_a)
    = d_a (d_s + d_h + 1) (Bahdanau et al. 2015; book 7.2 eq. 7.14-7.16):
    three bias-free ``linear`` ops."""
    p = _p("fp32")
    return (make("linear", "W1", p, tokens=1, d_in=d_s, d_out=d_a, bias=False).params
            + make("linear", "W2", p, tokens=1, d_in=d_h, d_out=d_a, bias=False).params
            + make("linear", "v", p, tokens=1, d_in=d_a, d_out=1, bias=False).params)


FUNCTIONS = {
    "attention_matrix_bytes": attention_matrix_bytes,
    "attention_matrix_elements": attention_matrix_elements,
    "attention_core_flops": attention_core_flops,
    "linear_attention_flops": linear_attention_flops,
    "linear_attention_state_bytes": linear_attention_state_bytes,
    "bahdanau_attention_flops": bahdanau_attention_flops,
    "bahdanau_attention_params": bahdanau_attention_params,
}
