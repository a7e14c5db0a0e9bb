"""Layer 3 of validation: predicted vs measured, on recorded data.

Reads the JSON written by ``costmodel measure`` and predicts every row with
the engine on the hardware YAML that describes the measured device:

* a single-op row names its engine ops (kind + dims); its time is the sum of
  their forward roofline times, with the same efficiency / bandwidth /
  launch-overhead terms the engine uses (``engine.efficiency`` reads
  ``hardware.calibration``);
* a whole-step row is ``engine.estimate`` of the model: a training step
  (``step_time_s``: forward + backward + AdamW update) or one inference
  forward (``forward_time_s``), at the measured batch, sequence / image and
  dtype, with AdamW in the implementation torch ran (single-tensor on the
  CPU, foreach on CUDA: ``optimizer_impl``) and ``zero_grad="zero"`` for
  ``zero_grad(set_to_none=False)``;
* a parameter-update row (``engine_update``: one tensor's AdamW step, or its
  gradient zero-fill + accumulation) is ``engine.update_time`` of that tensor.

fp32 runs are fp32 everywhere; bf16 runs are *pure* bf16 (weights,
gradients and AdamW states in bf16: ``master_weights=False``). Memory:
``total_memory_bytes`` with ``cuda_context_bytes=0`` and
``allocator_slack=0`` (the measurement counts tensors only): the peak, model
states + max(activations + the backward pass's working set, the optimizer
step's temporaries); inference: weights + the working set of activations.

A CPU run on fewer threads than the YAML's ``cores`` is predicted with the
compute peaks scaled by threads / cores (``as_run``).

Error = (predicted - measured) / measured; summaries are of |error|.
Needs only the core dependencies (no torch).
"""
from __future__ import annotations

import glob
import json
import os
import statistics
from dataclasses import dataclass, field

from ..errors import CostModelError

WHOLE = ("train_step", "inference")


@dataclass
class Row:
    id: str
    category: str
    measured_time: float | None
    predicted_time: float | None
    measured_memory: float | None = None
    predicted_memory: float | None = None
    note: str = ""
    op_class: str = ""

    @property
    def time_error(self) -> float | None:
        if not self.measured_time or self.predicted_time is None:
            return None
        return (self.predicted_time - self.measured_time) / self.measured_time

    @property
    def memory_error(self) -> float | None:
        if not self.measured_memory or self.predicted_memory is None:
            return None
        return (self.predicted_memory - self.measured_memory) / self.measured_memory

    def to_dict(self) -> dict:
        return {"id": self.id, "category": self.category, "op_class": self.op_class or None,
                "measured_time_s": self.measured_time, "predicted_time_s": self.predicted_time,
                "time_error": self.time_error, "measured_peak_memory_bytes": self.measured_memory,
                "predicted_peak_memory_bytes": self.predicted_memory, "memory_error": self.memory_error,
                "note": self.note or None}


@dataclass
class Comparison:
    device: str
    hardware: str
    calibrated: bool
    rows: list[Row] = field(default_factory=list)
    data: str = ""

    def summary(self) -> dict:
        out = {}
        for cat in sorted({r.category for r in self.rows}):
            rs = [r for r in self.rows if r.category == cat]
            out[cat] = _stats(rs)
        out["whole_step"] = _stats([r for r in self.rows if r.category in WHOLE])
        return out

    def to_dict(self) -> dict:
        s = self.summary()
        w = s["whole_step"]
        return {"device": self.device, "hardware": self.hardware, "calibrated": self.calibrated, "data": self.data,
                "error_definition": "(predicted - measured) / measured; medians and maxima are of |error|",
                "median_step_time_error": w["median_time_error"], "max_step_time_error": w["max_time_error"],
                "median_peak_memory_error": w["median_memory_error"], "max_peak_memory_error": w["max_memory_error"],
                "categories": s, "rows": [r.to_dict() for r in self.rows]}


def _stats(rows: list[Row]) -> dict:
    te = [abs(r.time_error) for r in rows if r.time_error is not None]
    me = [abs(r.memory_error) for r in rows if r.memory_error is not None]
    return {"n": len(rows), "n_time": len(te), "n_memory": len(me),
            "median_time_error": statistics.median(te) if te else None, "max_time_error": max(te) if te else None,
            "median_memory_error": statistics.median(me) if me else None, "max_memory_error": max(me) if me else None}


# --- data -----------------------------------------------------------------------------
def load_data(path: str) -> dict:
    if not os.path.exists(path):
        raise CostModelError("no such file (expected a JSON written by `costmodel measure`)", file=path)
    try:
        with open(path) as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CostModelError(f"not valid JSON ({e.__class__.__name__}: {str(e)[:80]})", file=path) from None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("costmodel.validation/"):
        raise CostModelError("not a costmodel measurement (expected \"schema\": \"costmodel.validation/1\")", file=path)
    if not isinstance(doc.get("rows"), list):
        raise CostModelError("missing \"rows\" list", file=path, field="rows")
    return doc


def default_data(root: str = "validation") -> list[str]:
    """The newest recording of each device under ``root``."""
    out = []
    for d in sorted(glob.glob(os.path.join(root, "*"))):
        files = sorted(glob.glob(os.path.join(d, "*.json")))
        if files:
            out.append(files[-1])
    return out


def hardware_for(doc: dict, hardware=None, hardware_dir=()):
    from ..catalog import load_hardware
    name = hardware or doc.get("hardware")
    if not name:
        raise CostModelError(f"no hardware YAML known for device {doc.get('device', {}).get('name')!r} "
                             f"(pass --hardware NAME_OR_YAML)", field="hardware")
    return load_hardware(name, hardware_dir)


def threads_used(doc: dict, hw) -> tuple[int, int] | None:
    """(threads, cores) when a CPU run used fewer threads than the device has cores."""
    t = doc.get("device", {}).get("threads")
    if hw.kind == "cpu" and hw.cores and t and doc.get("device", {}).get("kind") == "cpu" and t < hw.cores:
        return t, hw.cores
    return None


def as_run(doc: dict, hw):
    """The hardware the run actually used: a CPU run on ``threads`` of the
    YAML's ``cores`` has ``threads/cores`` of its compute peaks (the same
    cores x clock x FLOP/cycle derivation); memory bandwidth is the host's."""
    tc = threads_used(doc, hw)
    if tc is None:
        return hw
    f = tc[0] / tc[1]
    d = hw.model_dump()
    for k, v in d["peak"].items():
        if v:
            v["flops"] *= f
    d["vector"] = {k: (v * f if v else v) for k, v in d["vector"].items()}
    d["cores"] = tc[0]
    d["name"] = hw.name
    return type(hw).model_validate(d)


# --- predictions ------------------------------------------------------------------------
def predict_single(row: dict, hw) -> float:
    """Forward time of a single-op row: the roofline of each of its engine ops
    (memory term cache-aware where the class has a calibrated memory curve, as
    in ``engine.cost_ops``); a parameter-update row (``engine_update``): the
    engine's update time of one tensor (``engine.update_time``)."""
    from ..engine import efficiency, memory_efficiency, op_peak, roofline
    from ..ops import Precision, make
    if row.get("engine_update"):
        return predict_update(row, hw)
    p = Precision.of(row["dtype"])
    bw = hw.memory.bandwidth
    over = hw.calibration.launch_overhead_s if hw.calibration else 0.0
    total = 0.0
    for e in row["engine_ops"]:
        op = make(e["kind"], "op", p, **e["dims"])
        t, _ = roofline(op.fwd_flops, op.fwd_bytes, op_peak(hw, p, op.op_class),
                        efficiency(hw, op.op_class, op.fwd_flops), bw,
                        memory_efficiency(hw, op.op_class, op.fwd_bytes), over)
        total += t
    return total


def update_dtypes(dtype: str) -> dict:
    """State dtypes of a measured run: fp32 everywhere, or pure 16-bit (no master weights)."""
    from ..memory import state_dtypes
    return state_dtypes(dtype, master_weights=False, fp32_grads=False)


def predict_update(row: dict, hw) -> float:
    from ..engine import update_time
    from ..memory import optimizer_state_bytes_per_param
    u = row["engine_update"]
    d = update_dtypes(row["dtype"])
    opt_bpp = optimizer_state_bytes_per_param(u["optimizer"], d["state"]) if u.get("optimizer") else 0.0
    return update_time(hw, u.get("optimizer"), u.get("impl", "fused"), u.get("zero_grad", "set_to_none"), d, opt_bpp,
                       [(u["elements"], 1)])


def step_workload(row: dict, device_kind: str | None = None) -> dict:
    """The engine workload of a whole-step row, as it was run: AdamW in the
    implementation torch used (``optimizer_impl`` of the row; older recordings:
    torch's default, foreach on CUDA and single-tensor on the CPU) and
    ``zero_grad(set_to_none=False)`` when the row says so."""
    wl = dict(batch=row["batch"], precision=row["dtype"], mode="train" if row["category"] == "train_step" else "inference",
              optimizer="adamw", recompute="none", flash=False, cuda_context_bytes=0.0, allocator_slack=0.0,
              gen_tokens=0)
    if row["category"] == "train_step":
        wl["optimizer_impl"] = row.get("optimizer_impl") or ("foreach" if device_kind == "gpu" else "single-tensor")
        if row.get("zero_grad") == "set_to_none=False":
            wl["zero_grad"] = "zero"
    if row["dtype"] in ("bf16", "fp16"):
        wl["master_weights"] = False     # pure 16-bit run: weights, grads, AdamW states in bf16
    if row.get("seq"):
        wl["seq"] = row["seq"]
    if row.get("image"):
        wl["image"] = row["image"]
    return wl


def predict_step(row: dict, hw, device_kind: str | None = None) -> tuple[float, float]:
    """(time in s, peak memory in bytes) of a whole-step row."""
    from ..engine import estimate
    rep = estimate(row["model"], hw, step_workload(row, device_kind), overrides=row.get("overrides") or None)
    v = rep.values
    if row["category"] == "train_step":
        return v["step_time_s"], v["total_memory_bytes"]
    return v["forward_time_s"], v["weight_bytes"] + v["activation_bytes"]


def compare(doc: dict, hw, data_path: str = "") -> Comparison:
    tc = threads_used(doc, hw)
    label = hw.name + (f" at {tc[0]} of {tc[1]} cores" if tc else "")
    hw = as_run(doc, hw)
    cmp = Comparison(device=doc.get("device", {}).get("name", "?"), hardware=label,
                     calibrated=hw.calibration is not None, data=data_path)
    for r in doc["rows"]:
        if "time_s" not in r:
            cmp.rows.append(Row(r.get("id", "?"), r.get("category", "?"), None, None,
                                note=r.get("error") or r.get("skipped") or "not measured"))
            continue
        if r["category"] == "single_op":
            cmp.rows.append(Row(r["id"], "single_op", r["time_s"], predict_single(r, hw), op_class=r.get("op_class", "")))
        elif r["category"] in WHOLE:
            t, m = predict_step(r, hw, doc.get("device", {}).get("kind"))
            cmp.rows.append(Row(r["id"], r["category"], r["time_s"], t, r.get("peak_memory_bytes"), m))
    return cmp
