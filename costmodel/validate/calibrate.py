"""Calibration: achievable efficiency per op class, fitted to single-op rows.

Model (engine.roofline, engine.efficiency, engine.memory_efficiency,
engine.update_time): an op of class c with F FLOPs touching B bytes takes

    t = max(F / (peak * eff_c(F)), B / (bandwidth * mem_c(B))) + launch_overhead
    eff_c(F) = max_eff_c * F / (F + half_flops_c)       (a saturating curve)
    mem_c(B) = memory_eff, or for a class with a cache-aware memory curve
               (elementwise, optimizer; specs.hardware.MemoryCurve)
               1 / (h / cache_eff + (1 - h) / dram_eff),  h = 1 / (1 + (B / cache_bytes)^order)

and a parameter update (class ``optimizer``: one AdamW step, or zero_grad's
fill + accumulation, of one tensor) moves the bytes of its in-place kernels at
the ``optimizer`` curve of the tensor's working set, those of its kernels that
write a new tensor at the ``elementwise`` curve, plus ``launch_overhead_s``
per kernel and ``update_overhead_s`` per tensor of an optimizer step.

Fitted parameters: (max_eff, half_flops) for each class seen in the data
(matmul, attention, conv, elementwise), one ``memory_eff``, one
``launch_overhead_s``; and, for each memory-bound class measured at >= 4
sizes, its memory curve (cache_eff, dram_eff, cache_bytes, order), plus
``update_overhead_s`` when update rows are present. Objective: the sum over
single-op rows of log(predicted / measured)^2 (relative errors, symmetric in
over/under). Method: coordinate descent, a golden-section search per
parameter on a log scale inside fixed bounds, repeated until no parameter
moves (pure Python: the core takes no numpy/scipy dependency); first without
memory curves, then with them, started equal to the fitted ``memory_eff``.

Hold-out: the fit sees only ``single_op`` rows; whole-step rows (training
steps, inference passes) are only used to judge it.
"""
from __future__ import annotations

import json
import math
import os
import tempfile

from ..errors import CostModelError
from .compare import predict_single

CLASSES = ("matmul", "attention", "conv", "elementwise")
# memory-bound classes that get a cache-aware memory curve (MemoryCurve) when
# the data has rows of them at >= MEMORY_CURVE_MIN_SIZES different sizes
MEMORY_CLASSES = ("elementwise", "optimizer")
MEMORY_CURVE_MIN_SIZES = 4
# bounds of each parameter (fits on a log scale)
BOUNDS = {"max_eff": (1e-3, 1.0), "half_flops": (1e2, 1e14), "memory_eff": (1e-3, 1.0),
          "launch_overhead_s": (1e-8, 1e-2), "cache_eff": (1e-3, 100.0), "dram_eff": (1e-3, 100.0),
          "cache_bytes": (1e3, 1e11), "order": (0.25, 16.0), "update_overhead_s": (1e-8, 1e-2)}


def _row_classes(r) -> set[str]:
    from ..ops import Precision, make
    if r.get("engine_update"):
        return {"optimizer"}
    return {make(e["kind"], "op", Precision.of(r["dtype"]), **e["dims"]).op_class for e in r["engine_ops"]}


def _classes_in(rows) -> list[str]:
    seen = set()
    for r in rows:
        seen |= _row_classes(r)
    return [c for c in CLASSES if c in seen]


def _memory_classes_in(rows) -> list[str]:
    """Memory-bound classes measured at enough different sizes to fit a curve."""
    sizes: dict[str, set] = {}
    for r in rows:
        for c in _row_classes(r):
            sizes.setdefault(c, set()).add(json.dumps(r.get("shape") or r["id"], sort_keys=True))
    return [c for c in MEMORY_CLASSES if len(sizes.get(c, ())) >= MEMORY_CURVE_MIN_SIZES]


def _with(hw, params: dict, source: str, date: str, notes: str = ""):
    from ..specs.hardware import Calibration, CalibrationCurve, MemoryCurve
    curves = {c: CalibrationCurve(max_eff=params[f"{c}.max_eff"], half_flops=params[f"{c}.half_flops"])
              for c in CLASSES if f"{c}.max_eff" in params}
    mcurves = {c: MemoryCurve(cache_eff=params[f"mem.{c}.cache_eff"], dram_eff=params[f"mem.{c}.dram_eff"],
                              cache_bytes=params[f"mem.{c}.cache_bytes"], order=params[f"mem.{c}.order"])
               for c in MEMORY_CLASSES if f"mem.{c}.cache_eff" in params}
    cal = Calibration(source=source, date=date, curves=curves, memory_eff=params["memory_eff"],
                      memory_curves=mcurves, launch_overhead_s=params["launch_overhead_s"],
                      update_overhead_s=params.get("update_overhead_s", 0.0), notes=notes)
    return hw.model_copy(update={"calibration": cal})


def loss(rows, hw) -> float:
    s = 0.0
    for r in rows:
        p = predict_single(r, hw)
        s += math.log(max(p, 1e-15) / r["time_s"]) ** 2
    return s


def fit(single_rows: list[dict], hw, *, source: str, date: str, sweeps: int = 8, tol: float = 1e-4):
    """A copy of ``hw`` whose ``calibration`` is fitted to ``single_rows``."""
    rows = [r for r in single_rows if r.get("category") == "single_op" and r.get("time_s")]
    if len(rows) < 4:
        raise CostModelError(f"calibration needs single-op rows with times (found {len(rows)}; expected >= 4)")
    params = {"memory_eff": 0.7, "launch_overhead_s": 1e-6}
    for c in _classes_in(rows):
        params[f"{c}.max_eff"] = 0.7
        params[f"{c}.half_flops"] = 1e8

    def f(ps):
        return loss(rows, _with(hw, ps, source, date))

    # stage 1: one memory efficiency for all classes; stage 2: cache-aware memory
    # curves, started where each equals stage 1's memory_eff at every size (so
    # the objective can only go down)
    params, best = _descend(f, params, sweeps, tol)
    mem = _memory_classes_in(rows)
    if mem:
        for c in mem:
            params[f"mem.{c}.cache_eff"] = params[f"mem.{c}.dram_eff"] = params["memory_eff"]
            params[f"mem.{c}.cache_bytes"] = hw.memory.l2_bytes or 1e7
            params[f"mem.{c}.order"] = 1.0
        if "optimizer" in mem:
            params["update_overhead_s"] = 1e-6
        params, best = _descend(f, params, sweeps, tol)
    n = len(rows)
    notes = (f"fitted to {n} single-op rows (forward time per call); objective sum of log(pred/meas)^2 = "
             f"{best:.4g} (rms {math.exp(math.sqrt(best / n)) - 1:.1%}); whole-step rows held out")
    return _with(hw, params, source, date, notes)


def _descend(f, params: dict, sweeps: int, tol: float) -> tuple[dict, float]:
    """Coordinate descent: a golden-section search per parameter (log scale,
    inside BOUNDS), keeping a move only when it lowers ``f``."""
    params = dict(params)
    best = f(params)
    for _ in range(sweeps):
        moved = False
        for k in list(params):
            lo, hi = BOUNDS[k.split(".")[-1]]
            x, v = _golden(lambda val: f({**params, k: val}), lo, hi)
            if v < best - tol * max(best, 1e-12):
                if abs(math.log(x / params[k])) > 1e-3:
                    moved = True
                params[k], best = x, v
        if not moved:
            break
    return params, best


def _golden(fn, lo: float, hi: float, iters: int = 40) -> tuple[float, float]:
    """Minimise fn on [lo, hi] in log space."""
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = fn(math.exp(c)), fn(math.exp(d))
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = fn(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = fn(math.exp(d))
    x = math.exp((a + b) / 2)
    return x, fn(x)


def calibration_yaml(cal) -> str:
    import yaml
    d = cal.model_dump(exclude_none=True)
    d["curves"] = {k: {"max_eff": round(v["max_eff"], 4), "half_flops": float(f"{v['half_flops']:.4g}")}
                   for k, v in d["curves"].items()}
    d["memory_eff"] = round(d["memory_eff"], 4)
    if d.get("memory_curves"):
        d["memory_curves"] = {k: {"cache_eff": float(f"{v['cache_eff']:.4g}"),
                                  "dram_eff": float(f"{v['dram_eff']:.4g}"),
                                  "cache_bytes": float(f"{v['cache_bytes']:.4g}"), "order": round(v["order"], 3)}
                              for k, v in d["memory_curves"].items()}
    else:
        d.pop("memory_curves", None)
    d["launch_overhead_s"] = float(f"{d['launch_overhead_s']:.4g}")
    if d.get("update_overhead_s"):
        d["update_overhead_s"] = float(f"{d['update_overhead_s']:.4g}")
    else:
        d.pop("update_overhead_s", None)
    return yaml.safe_dump({"calibration": d}, sort_keys=False, width=110)


def write_calibration(path: str, cal) -> None:
    """Replace (or add) the top-level ``calibration:`` block of a hardware YAML,
    leaving every other line as it was; validate before an atomic write."""
    import yaml
    from ..specs.hardware import Hardware
    with open(path) as f:
        lines = f.read().splitlines()
    out, skip = [], False
    for ln in lines:
        if ln.startswith("calibration:"):
            skip = True
            continue
        if skip and ln and not ln[0].isspace() and not ln.startswith("#"):
            skip = False
        if not skip:
            out.append(ln)
    while out and not out[-1].strip():
        out.pop()
    text = "\n".join(out) + "\n" + calibration_yaml(cal)
    Hardware.model_validate(yaml.safe_load(text))   # never write a file the catalog cannot load
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".costmodel-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def round_calibration(hw):
    """``hw`` with its calibration rounded as written to YAML (so a prediction
    made right after fitting equals one made from the written file)."""
    import yaml
    from ..specs.hardware import Calibration
    if hw.calibration is None:
        return hw
    return hw.model_copy(update={"calibration": Calibration.model_validate(
        yaml.safe_load(calibration_yaml(hw.calibration))["calibration"])})
