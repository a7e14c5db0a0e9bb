"""Closed forms needed by the book figures of chapters 1-3 (book lines 336-2502).

Each function is a general formula with its source; where an op of the op
library (costmodel/ops.py) describes the object, the function is built on it.
"""
from __future__ import annotations

import math

from ..ops import DTYPE_BYTES, Precision, make


def tensor_bytes(*dims, dtype="fp32"):
    """Bytes of a dense tensor: prod(dims) * bytes per element of ``dtype``
    (ops.DTYPE_BYTES: fp32/tf32 4, fp16/bf16 2, fp8/int8 1; book 1.1.1, 1.6.1)."""
    n = 1
    for d in dims:
        n *= d
    return n * DTYPE_BYTES[dtype]


def lowrank_factor_params(m, n, rank):
    """Parameters of a rank-``rank`` factorisation W (m x n) ~ W1 W2 with
    W1: m x rank, W2: rank x n, i.e. two bias-free linear ops n -> rank -> m:
    rank * (m + n). Truncated SVD (Eckart & Young 1936; book 1.4.2, Example
    1.12) and LoRA's B (d x r) A (r x k) update (Hu et al. 2021, sec. 4.1)."""
    p = Precision.of("fp32")
    a = make("linear", "W2", p, tokens=1, d_in=n, d_out=rank, bias=False)
    b = make("linear", "W1", p, tokens=1, d_in=rank, d_out=m, bias=False)
    return a.params + b.params


def cpu_cache_line_bytes(arch="x86-64"):
    """Cache-line size of mainstream CPUs: 64 bytes (Intel 64 and IA-32
    Architectures Optimization Reference Manual, sec. 'Cache line size';
    AMD64 Architecture Programmer's Manual vol. 2 sec. 7.1; Arm Cortex-A7x /
    Neoverse technical reference manuals: 64-byte L1/L2 lines). Apple M-series
    use 128-byte lines (not covered)."""
    sizes = {"x86-64": 64, "arm64": 64}
    if arch not in sizes:
        raise ValueError(f"unknown CPU architecture {arch!r}")
    return sizes[arch]


def allreduce_steps(n, algorithm="ring"):
    """Communication steps of an all-reduce over ``n`` ranks
    (Thakur, Rabenseifner & Gropp 2005, sec. 4; Patarasuk & Yuan 2009):
    ring = reduce-scatter (n-1 steps) + all-gather (n-1 steps) = 2(n-1);
    tree (binomial reduce then broadcast) = 2*ceil(log2 n)."""
    if algorithm == "ring":
        return 2 * (n - 1)
    if algorithm == "tree":
        return 2 * math.ceil(math.log2(n))
    raise ValueError(f"unknown all-reduce algorithm {algorithm!r}")


def amdahl_speedup(fraction, part_speedup):
    """Overall speedup when a ``fraction`` of the run time is sped up by
    ``part_speedup``: 1 / ((1 - f) + f / s) (Amdahl 1967)."""
    return 1.0 / ((1.0 - fraction) + fraction / part_speedup)


def segment_checkpoint_peak_bytes(layers, segment, layer_bytes, boundary_bytes):
    """Peak activation memory of segment checkpointing (Chen et al. 2016,
    'Training Deep Nets with Sublinear Memory Cost', sec. 3): keep the input
    of each of the layers/segment segments (``boundary_bytes`` each), and
    during backward re-materialise one segment's full activations
    (segment * ``layer_bytes``). Takes the per-layer sizes as numbers (a
    book's stated figures); segment_checkpoint_bytes (bookfuncs/ch10_11.py)
    applies the same rule to a model's engine op tree."""
    return (layers / segment) * boundary_bytes + segment * layer_bytes


def adaptive_softmax_head_cost(clusters):
    """Output units evaluated for a token of the head (shortlist) cluster of an
    adaptive softmax (Grave et al. 2017, sec. 4.1): the shortlist plus one unit
    per tail cluster = clusters[0] + (len(clusters) - 1)."""
    return clusters[0] + (len(clusters) - 1)


def finite_difference_passes(n_params):
    """Forward passes for a one-sided finite-difference gradient of n
    parameters: one baseline + one perturbed pass per parameter = n + 1
    (Nocedal & Wright 2006, sec. 8.1; book 2.4.3)."""
    return n_params + 1


# GPUs the book names that hardware/ does not ship (capacity as the vendor's
# "N GB" label means it: N GiB of device memory).
_OFF_CATALOGUE_MEMORY = {
    # NVIDIA GeForce RTX 3090 specifications (nvidia.com, 'Memory Size 24 GB
    # GDDR6X'); nvidia-smi reports 24576 MiB = 24 GiB.
    "rtx-3090": 24 * 2 ** 30,
}


def offcatalogue_gpu_memory_bytes(name):
    """Device memory of a GPU that has no hardware/*.yaml yet, in bytes
    (sources in the table above). Prefer capacity(name) for catalogued GPUs."""
    if name not in _OFF_CATALOGUE_MEMORY:
        raise ValueError(f"no off-catalogue memory size for {name!r}; use capacity()")
    return _OFF_CATALOGUE_MEMORY[name]


FUNCTIONS = {
    "offcatalogue_gpu_memory_bytes": offcatalogue_gpu_memory_bytes,
    "tensor_bytes": tensor_bytes,
    "lowrank_factor_params": lowrank_factor_params,
    "cpu_cache_line_bytes": cpu_cache_line_bytes,
    "allreduce_steps": allreduce_steps,
    "amdahl_speedup": amdahl_speedup,
    "segment_checkpoint_peak_bytes": segment_checkpoint_peak_bytes,
    "adaptive_softmax_head_cost": adaptive_softmax_head_cost,
    "finite_difference_passes": finite_difference_passes,
}
