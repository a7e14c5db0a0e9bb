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
        return 2 * n * 1 + 2 * 4 * -(-n // 2048)
    if optimizer == "adafactor":
        total = 0
        for s in param_shapes:
            if len(s) >= 2:
                rows = _numel(s[:-1])
                total += (rows + s[-1]) * state_bytes
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
    return 0.0


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
