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
