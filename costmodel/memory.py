"""Model-state memory: weights, gradients, master weights, optimizer states.

Bytes per parameter (Rajbhandari et al. 2020, ZeRO, sec. 3.1: mixed-precision
Adam keeps 2 (fp16 weights) + 2 (fp16 grads) + 4 (fp32 master) + 4 + 4
(fp32 momentum, variance) = 16 bytes/param; book 2.5.1).
"""
from __future__ import annotations

# optimizer state per parameter, in units of the state dtype (fp32 = 4 bytes)
#   sgd: none; sgd-momentum: velocity; adam/adamw/lamb: m and v (Kingma & Ba 2015;
#   You et al. 2019); lion: one momentum (Chen et al. 2023); adafactor: factored
#   second moment, rows + cols per matrix (Shazeer & Stern 2018), no momentum;
#   adam-8bit: m, v in int8 + one fp32 absmax per 2048-value block
#   (Dettmers et al. 2022, bitsandbytes blockwise quantisation).
STATES = {"sgd": 0, "sgd-momentum": 1, "adam": 2, "adamw": 2, "lamb": 2, "lion": 1}


def optimizer_state_bytes(optimizer: str, param_shapes, state_bytes: int = 4) -> float:
    """Exact optimizer-state bytes for the given parameter shapes."""
    n = sum(_numel(s) for s in param_shapes)
    if optimizer in STATES:
        return STATES[optimizer] * state_bytes * n
    if optimizer == "adam-8bit":
        # per tensor; tensors under 4096 elements stay 32-bit (bitsandbytes
        # Optimizer8bit min_8bit_size=4096): 2 fp32 states
        total = 0
        for s in param_shapes:
            k = _numel(s)
            total += 2 * 4 * k if k < 4096 else 2 * k + 2 * 4 * -(-k // 2048)
        return total
    if optimizer == "adafactor":
        total = 0
        for s in param_shapes:
            if len(s) >= 2:   # HF Adafactor: row stats shape[:-1], column stats shape[:-2] + shape[-1:]
                total += (_numel(s[:-1]) + _numel(s[:-2]) * s[-1]) * state_bytes
            else:
                total += _numel(s) * state_bytes
        return total
    raise ValueError(optimizer)


def optimizer_state_bytes_per_param(optimizer: str, state_bytes: int = 4) -> float:
    """Bytes/param for dense optimizers (adafactor depends on shapes: ~0)."""
    if optimizer in STATES:
        return STATES[optimizer] * state_bytes
    if optimizer == "adam-8bit":
        return 2 + 8 / 2048
    if optimizer == "adafactor":    # factored: ~ (rows + cols) / (rows * cols) per matrix, ~0
        return 0.0
    raise ValueError(optimizer)


def model_state_bytes(params: float, dtypes: dict, opt_bytes_per_param: float, zero: int = 0,
                      dp: int = 1) -> dict:
    """Per-device bytes of the model states of ``params`` parameters (those this
    device holds before ZeRO sharding: its tensor/pipeline shard).

    ``dtypes``: ``state_dtypes(...)``; ``opt_bytes_per_param``: optimizer-state
    bytes per parameter (``optimizer_state_bytes_per_param``, or the
    shape-dependent average for adafactor).
    ZeRO (Rajbhandari et al. 2020, sec. 5.1-5.3 and Fig. 1), with K = master +
    optimizer bytes per parameter (12 for mixed-precision Adam):
        stage 0: Psi*(2 + 2 + K)            stage 1: Psi*(2 + 2 + K/N)
        stage 2: Psi*(2 + (2 + K)/N)        stage 3: Psi*(2 + 2 + K)/N
    (book 11.8.5, line 7381). The fp32 master copy belongs to the optimizer
    state partition (stage >= 1), as in the paper's K.
    """
    n_opt = dp if zero >= 1 else 1
    return {"weight": params * dtypes["weight"] / (dp if zero >= 3 else 1),
            "grad": params * dtypes["grad"] / (dp if zero >= 2 else 1),
            "master": params * dtypes["master"] / n_opt,
            "optimizer": params * opt_bytes_per_param / n_opt}


def kv_cache_bytes(layers: int, batch: int, kv_heads: int, d_head: int, context: int, bytes_per: float) -> float:
    """KV cache: 2 (K and V) * layers * batch * kv_heads * d_head * context * bytes
    (MQA/GQA: kv_heads < heads; Shazeer 2019; Ainslie et al. 2023; Pope et al. 2022)."""
    return 2.0 * layers * batch * kv_heads * d_head * context * bytes_per


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def state_dtypes(precision: str, master_weights: bool, fp32_grads: bool) -> dict:
    """Bytes per element of each model-state tensor for a precision regime.

    * fp32 / tf32: everything fp32 (4 + 4 + states).
    * fp16 / bf16 / fp8 mixed precision (Micikevicius et al. 2018): 16-bit
      working weights and gradients (fp32 gradients with ``fp32_grads``),
      fp32 master weights and fp32 optimizer states.
    * ``master_weights=False`` ("pure bf16"): weights, grads and states all 16-bit.
    """
    if precision in ("fp32", "tf32"):
        return dict(weight=4, grad=4, master=0, state=4)
    if master_weights:
        return dict(weight=2, grad=4 if fp32_grads else 2, master=4, state=4)
    return dict(weight=2, grad=2, master=0, state=2)


# --- transient memory of a training step ---------------------------------------------
def backward_bytes(o, act_bytes: int, k: int = 1) -> tuple[float, float]:
    """What one op's backward allocates while it runs, by PyTorch autograd
    semantics (torch/csrc/autograd/engine.cpp: a node's output gradient lives
    until the node has run; its input gradients are new tensors handed to the
    next nodes; saved tensors are freed after their node's backward):
    ``(gradient bytes, weight-gradient elements)``.

    Gradient bytes (scale with the batch): the gradient of the op's output
    (grad-out) + the gradients of its inputs (grad-in) + named temporaries,
    at the activation dtype unless stated:

    * linear: tokens x d_out + tokens x d_in (no grad-in for data input);
      conv2d: N C_out H_out W_out + N C_in H W; bmm: (m x n) + (m x k) + (k x n)
      per batch; rnn: batch seq (hidden dirs + d_in);
    * flash attention (FlashAttention-2 ``mha_bwd``, csrc/flash_attn/flash_api.cpp,
      vendored in ATen): dO, dQ, dK, dV (dK, dV at ``heads``: the kernel writes
      expanded copies for GQA), plus its fp32 ``dq_accum`` (b, q, h, d) and
      ``softmax_d`` (b, h, q);
    * one-input elementwise ops, norms, softmax, pooling: grad-out + grad-in of
      the same shapes (= the forward's bytes for softmax and pooling); GLU: grad-out
      + the two input gradients; residual add: its grad-out only (passed to both
      inputs, no new tensor); embedding: grad-out;
    * cross entropy (log-softmax + NLL over fp32 logits, the HF loss):
      ``nll_loss_backward`` writes a dense fp32 rows x vocab gradient (zeros with
      -1/N at the targets) and ``log_softmax_backward`` a second one from it:
      2 x rows x vocab x 4 bytes. In 16-bit training the cast of that gradient
      for the LM head (rows x vocab x 2) comes after the log-softmax's saved fp32
      output is freed, so this moment is the larger one.

    ``k``: the op's vocabulary-parallel divisor (Megatron: LM head and loss
    split over the tensor-parallel group). Weight-gradient elements: the op's
    parameters -- a new tensor of the parameter's size per backward
    (``embedding_dense_backward`` makes a dense table), which becomes ``.grad``
    when there is none and is a temporary added into ``.grad`` otherwise
    (``AccumulateGrad``, torch/csrc/autograd/functions/accumulate_grad.h).
    """
    a, d, kind = act_bytes, o.dims, o.kind
    if kind == "linear":
        din = d["tokens"] * d["d_in"] * a if o.bwd_matmul_flops > o.matmul_flops else 0
        g = (d["tokens"] * d["d_out"] * a + k * din) / k      # one rounding (costmodel/fastpath.py)
    elif kind == "bmm":
        g = d["batch"] * (d["m"] * d["n"] + d["m"] * d["k"] + d["k"] * d["n"]) * a
    elif kind == "flash_attention":
        bh = d["batch"] * d["heads"]
        q, kv = bh * d["q_len"] * d["d_head"], bh * d["kv_len"] * d["d_head"]
        g = (2 * q + 2 * kv) * a + q * 4 + bh * d["q_len"] * 4
    elif kind == "conv2d":
        din = d["n"] * d["c_in"] * d["h"] * d["w"] * a if o.bwd_matmul_flops > o.matmul_flops else 0
        g = d["n"] * d["c_out"] * d["h_out"] * d["w_out"] * a + din
    elif kind == "rnn":
        g = d["batch"] * d["seq"] * (d["hidden"] * d["directions"] + d["d_in"]) * a
    elif kind in ("activation", "dropout", "scale", "rotary"):
        g = 2 * d["elements"] * a
    elif kind == "glu":
        g = 3 * d["elements"] * a
    elif kind == "add":
        g = d["elements"] * a
    elif kind == "norm":
        g = 2 * d["rows"] * d["dim"] * a
    elif kind == "batchnorm":
        g = 2 * d["n"] * d["channels"] * d["hw"] * a
    elif kind in ("softmax", "pool"):
        g = o.fwd_bytes            # input + output: the shapes of grad-in + grad-out
    elif kind == "embedding":
        g = d["tokens"] * d["dim"] * a
    elif kind == "cross_entropy":
        g = 2 * d["rows"] * d["vocab"] * 4 / k
    else:                          # bare parameters: no activation gradient
        g = 0
    return g, o.params / k


def optimizer_temp_bytes(optimizer: str, impl: str, params: float, max_tensor: float, state_bytes: int) -> float:
    """Bytes the optimizer step allocates on top of the model states
    (torch/optim/adam.py, torch 2.13; AdamW is Adam with decoupled decay).

    * single-tensor (``_single_tensor_adam``), per parameter tensor:
      ``denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)`` -- the
      sqrt and the quotient are both alive for a moment: 2 x the largest
      tensor, in the state dtype; everything else is in place;
    * foreach (``_multi_tensor_adam``): ``exp_avg_sq_sqrt =
      torch._foreach_sqrt(device_exp_avg_sqs)`` allocates one list the size of
      all parameters, then divides and adds in place;
    * fused (one kernel per tensor list) and SGD (in-place ``mul_``, ``add_``;
      torch/optim/sgd.py): none.
    These coexist with the model states but not with activations, which the
    backward pass has freed before the step."""
    if optimizer not in ("adam", "adamw") or impl == "fused":
        return 0.0
    if impl == "single-tensor":
        return 2.0 * max_tensor * state_bytes
    return float(params) * state_bytes
