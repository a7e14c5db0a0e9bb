"""Formulas added by the independent audit of the book's chapters 7-11
(book lines 3743-8858, catalogue costmodel/data/book/audit_ch07_11.yaml).

Each function is general (any model, any workload) and is built on the
engine, so the audit entries use the same memory model as everything else.
"""
from __future__ import annotations


def checkpoint_activation_reduction(model, hardware="a100-80gb", **workload):
    """Fraction of activation memory removed by full activation checkpointing:
    keep only each transformer layer's input and recompute the layer in the
    backward pass (Chen et al. 2016, "Training Deep Nets with Sublinear Memory
    Cost", sec. 3; Korthikanti et al. 2022, sec. 4.1; book 11.7.1).

    1 - activation_bytes(recompute='full') / activation_bytes(recompute='none'),
    both from the engine for the same model, hardware and workload (the
    checkpointed figure includes one layer's recompute working set)."""
    from ..book import _estimate
    kw = {k: v for k, v in workload.items() if k != "recompute"}
    full = _estimate(model, hardware, recompute="full", **kw)["activation_bytes"]
    none = _estimate(model, hardware, recompute="none", **kw)["activation_bytes"]
    return 1.0 - full / none


FUNCTIONS = {
    "checkpoint_activation_reduction": checkpoint_activation_reduction,
}
