"""Search parallel layouts for a training run; keep the time-cost Pareto front.

``plan(model, hardware, tokens, ...)`` enumerates data / tensor / pipeline
parallel degrees, ZeRO stage, micro-batch, recomputation and flash attention
for a fixed global batch, keeps the layouts that fit in device memory, and
returns those no other layout beats on both wall time and cost.

The search is analytical, not brute force:

* structure: tp divides the heads (and kv heads, d_ff) and stays inside one
  node (tensor-parallel all-reduces need the intra-node link; Narayanan et al.
  2021, sec. 3.2 "takeaway #1"); pp divides the layers; dp divides the global
  batch; the micro-batch divides the per-replica batch; dp*tp*pp <= --gpus-max.
  Sequence parallelism is on whenever tp > 1: same communication volume as
  plain tensor parallelism, less activation memory (Korthikanti et al. 2022,
  sec. 4.2.2), so it dominates.
* bound: for a (tp, pp, dp, flash, micro-batch) family the step can be no
  shorter than T0 = (m + pp - 1) * (forward + backward of one micro-batch on
  the slowest stage): recomputation, optimizer, communication only add time.
  Families are visited by increasing T0 and skipped when a layout already
  found is at least as fast as T0 and at least as cheap as T0 on this many
  devices (then nothing in the family can reach the front), or when T0
  already breaks --deadline / --budget.
* memory is non-decreasing in the micro-batch (the in-flight activations of
  the first stage are mb * min(pp, B/(dp*mb)) micro-batch-sized sets) and
  non-increasing in ZeRO stage and recomputation, so one failure at micro-batch
  mb rules out every larger mb for that choice, and per ZeRO stage only the
  cheapest recomputation that fits is timed (recomputation only adds time).
* the engine's own arithmetic (``engine._train_values``) times each survivor
  from shape profiles cached per (tp, micro-batch, flash): no tree is built
  twice.

Whole-run time = steps * step time with steps = ceil(tokens / (batch * seq)),
the same for every layout, so cost (device-hours x price) = devices x time:
the front trades devices for days.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import engine as E
from .catalog import load_hardware, load_model
from .comm import run_cost
from .errors import CostModelError, suggest
from .specs.model import TransformerSpec, ViTSpec
from .workload import Workload

RECOMPUTE = ("none", "selective", "full")


@dataclass
class Layout:
    gpus: int
    dp: int
    tp: int
    pp: int
    zero: int
    micro_batch: int
    grad_accum: int
    recompute: str
    flash: bool
    sequence_parallel: bool
    memory_bytes: float
    memory_capacity_bytes: float
    step_time_s: float
    train_time_s: float
    device_hours: float
    cost_usd: float | None
    energy_kwh: float
    mfu: float
    tokens_per_s: float | None
    bubble_time_s: float
    exposed_comm_time_s: float


def _divisors(n: int) -> list[int]:
    small, large = [], []
    i = 1
    while i * i <= n:
        if n % i == 0:
            small.append(i)
            if i * i != n:
                large.append(n // i)
        i += 1
    return small + large[::-1]


def _ok(spec, tp: int, pp: int) -> bool:
    try:
        E._check_model_parallel(spec, tp, pp)
    except CostModelError:
        return False
    return True


def _default_batch(spec, seq: int) -> int:
    """Global batch when none is given: 2^20 tokens per step for token models
    (GPT-3 used 0.5M-3.2M tokens, Brown et al. 2020 Table 2.1), else 256
    samples (Goyal et al. 2017's ImageNet reference batch)."""
    if seq:
        return max(1, 2 ** round(math.log2(max(1, 2 ** 20 // seq))))
    return 256


def plan(model, hardware="a100-80gb", tokens: float | None = None, *, gpus_max: int = 512, gpus_min: int = 1,
         budget: float | None = None, deadline_days: float | None = None, batch: int | None = None,
         seq: int | None = None, precision: str | None = None, optimizer: str = "adamw",
         flash: bool | None = None, price: float | None = None, steps: int | None = None,
         overrides: dict[str, Any] | None = None, models_dir=(), hardware_dir=()) -> dict:
    """Search layouts; returns {"front": [Layout...] fastest first, "stats": {...}, ...}."""
    t_start = time.perf_counter()
    if tokens is None and steps is None:
        raise CostModelError("give the run length: --tokens N (or --steps N)", field="tokens")
    if gpus_max < 1 or gpus_min < 1 or gpus_min > gpus_max:
        raise CostModelError(f"--gpus-max {gpus_max} must be >= 1 and >= --gpus-min {gpus_min}", field="gpus_max")
    spec = load_model(model, models_dir)
    hw = load_hardware(hardware, hardware_dir)
    mo, ho, wo = E.split_overrides(overrides)
    spec = E._apply_overrides(spec, mo, "model.")
    hw = E._apply_overrides(hw, ho, "hardware.")
    banned = set(wo) & {"gpus", "dp", "tp", "pp", "zero", "micro_batch", "recompute", "flash", "mode",
                        "sequence_parallel"}
    if banned:
        raise CostModelError(f"{sorted(banned)[0]} is what plan searches; drop it from --set", field="set")
    base = {"mode": "train", "optimizer": optimizer}
    for k, v in (("seq", seq), ("precision", precision), ("tokens", tokens), ("steps", steps), ("price", price)):
        if v is not None:
            base[k] = v
    base.update(wo)
    try:
        wl0 = Workload.model_validate({**base, "batch": batch or 1})
    except Exception as e:   # pydantic: one line
        from pydantic import ValidationError
        if isinstance(e, ValidationError):
            err = e.errors()[0]
            f = ".".join(str(x) for x in err["loc"])
            if err["type"] == "extra_forbidden":
                raise CostModelError(f"unknown workload field{suggest(f, Workload.model_fields)}", field=f) from None
            raise CostModelError(f"{err['msg']} (got {err.get('input')!r})", field=f) from None
        raise
    r0 = E.resolve(spec, hw, wl0)          # checks precision, seq vs positions, image size
    if batch is None:
        batch = _default_batch(spec, r0.seq if E._model_kind(spec) == "token" else 0)
        base_batch_note = "default"
    else:
        base_batch_note = "given"
    base["batch"] = batch
    wl0 = Workload.model_validate(base)
    r0 = E.resolve(spec, hw, wl0)
    unit_price = price or (hw.price.usd_per_hour if hw.price else None)

    # --- structural candidates ------------------------------------------------
    dpn = hw.interconnect.devices_per_node
    model_par = isinstance(spec, (TransformerSpec, ViTSpec))
    tps = [t for t in range(1, dpn + 1) if t <= gpus_max and _ok(spec, t, 1)] if model_par else [1]
    layers = E.commmod._layers(spec)
    pps = [p for p in _divisors(layers) if p <= gpus_max and _ok(spec, 1, p)] if model_par and layers else [1]
    dps = [d for d in _divisors(batch) if d <= gpus_max]
    flashes = ([False, True] if isinstance(spec, TransformerSpec) else [False]) if flash is None else [flash]
    per_sample_units = E._units_per_sample(r0)
    steps_n = steps or math.ceil(tokens / (batch * per_sample_units) - 1e-9)

    cache: dict = {}
    stats = {"families": 0, "bounded_out": 0, "memory_out": 0, "evaluated": 0, "fits": 0}

    def resolved(**kw) -> E.Resolved:
        """A Resolved layout without re-validating: every enumerated degree already
        passed the engine's checks (``_ok``, divisors of batch and layers)."""
        wl = wl0.model_copy()
        wl.__dict__.update(kw)
        dp, mb = kw["dp"], kw["micro_batch"]
        r = E.Resolved(spec, hw, wl, r0.precision, r0.seq, r0.target_seq, r0.image, dp * kw["tp"] * kw["pp"], dp,
                       mb, batch // (dp * mb))
        r.cache = cache
        r.explain = False
        return r

    profiles: dict = {}

    def profile(r: E.Resolved, tp: int, mb: int, fl: bool):
        key = (tp, mb, fl)
        got = profiles.get(key)
        if got is None:
            got = profiles[key] = E.train_profiles(r)[:2]
        return got

    # --- lower bound per family ----------------------------------------------
    items = []
    for tp in tps:
        for pp in pps:
            if tp * pp > gpus_max:
                continue
            for dp in dps:
                n = dp * tp * pp
                if n > gpus_max or n < gpus_min:
                    continue
                for fl in flashes:
                    for mb in _divisors(batch // dp):
                        stats["families"] += 1
                        r = resolved(dp=dp, tp=tp, pp=pp, micro_batch=mb, flash=fl, zero=0, recompute="none",
                                     sequence_parallel=tp > 1, gpus=None)
                        P = profile(r, tp, mb, fl)[0]
                        stages = ("all",) if pp == 1 else ("first", "last")
                        t_mb = max(E._stage_sum(P["fwd"], w, pp) + E._stage_sum(P["bwd"], w, pp) for w in stages)
                        m = batch // (dp * mb)
                        items.append(((m + pp - 1) * t_mb, n, tp, pp, dp, fl, mb))
    items.sort()

    # --- bounded search -------------------------------------------------------
    front: list[tuple[float, int, Layout]] = []      # (step time, gpus, layout)
    infeasible: dict = {}                             # (tp, pp, dp, flash, zero, mode) -> smallest failing mb
    deadline_s = deadline_days * 86400 if deadline_days else None

    def dominated(t: float, n: int) -> bool:
        return any(ft <= t and fn * ft <= n * t for ft, fn, _ in front)

    for t0, n, tp, pp, dp, fl, mb in items:
        # lower bounds of this family's time and cost (for a clear verdict when nothing qualifies)
        stats["min_time_lower_bound_s"] = min(stats.get("min_time_lower_bound_s", math.inf), t0 * steps_n)
        lb_cost = run_cost(t0, steps_n, n, unit_price, hw.tdp_watts)["cost_usd"]
        if lb_cost is not None:
            stats["min_cost_lower_bound_usd"] = min(stats.get("min_cost_lower_bound_usd", math.inf), lb_cost)
        if dominated(t0, n):
            stats["bounded_out"] += 1
            continue
        if deadline_s and t0 * steps_n > deadline_s:
            stats["bounded_out"] += 1
            continue
        if budget and lb_cost is not None and lb_cost > budget:
            stats["bounded_out"] += 1
            continue
        zs = (0, 1, 2, 3) if dp > 1 else (0,)

        def evaluate(z, mode):
            """(values, resolved) or None when the layout does not fit; failures
            are remembered for every larger micro-batch and every lower ZeRO stage."""
            key = (tp, pp, dp, fl, z, mode)
            if mb >= infeasible.get(key, math.inf):
                return None
            r = resolved(dp=dp, tp=tp, pp=pp, micro_batch=mb, flash=fl, zero=z, recompute=mode,
                         sequence_parallel=tp > 1, gpus=None)
            P, F = profile(r, tp, mb, fl)
            v, _ = E._train_values(r, P, F)
            stats["evaluated"] += 1
            if not v["fits"]:
                for z2 in range(z + 1):
                    k2 = (tp, pp, dp, fl, z2, mode)
                    infeasible[k2] = min(mb, infeasible.get(k2, math.inf))
                return None
            return v, r

        # most memory-saving ZeRO stage first: if it fails for every recompute mode,
        # nothing in this family fits at this micro-batch or above
        top = {mode: evaluate(zs[-1], mode) for mode in RECOMPUTE}
        any_fit = False
        for z in zs:
            for mode in RECOMPUTE:
                got = top[mode] if z == zs[-1] else evaluate(z, mode)
                if got is None:
                    continue
                v, r = got
                any_fit = True
                stats["fits"] += 1
                st = v["step_time_s"]
                lay = Layout(gpus=n, dp=dp, tp=tp, pp=pp, zero=z, micro_batch=mb, grad_accum=r.accum,
                             recompute=mode, flash=fl, sequence_parallel=tp > 1,
                             memory_bytes=v["total_memory_bytes"], memory_capacity_bytes=v["memory_capacity_bytes"],
                             step_time_s=st,
                             **run_cost(st, steps_n, n, unit_price, hw.tdp_watts, wl0.utilization_power, wl0.pue),
                             mfu=v["mfu"], tokens_per_s=v.get("tokens_per_s"), bubble_time_s=v["bubble_time_s"],
                             exposed_comm_time_s=v["exposed_comm_time_s"])
                ok = (not deadline_s or lay.train_time_s <= deadline_s) and \
                     (not budget or lay.cost_usd is None or lay.cost_usd <= budget)
                if ok and not dominated(st, n):
                    front[:] = [f for f in front if not (st <= f[0] and n * st <= f[1] * f[0])]
                    front.append((st, n, lay))
                break                       # a costlier recomputation at this ZeRO stage only adds time
        if not any_fit:
            stats["memory_out"] += 1
    front.sort(key=lambda f: (f[0], f[1]))
    stats["elapsed_s"] = time.perf_counter() - t_start
    return {"model": spec.name, "hardware": hw.name, "tokens": tokens, "steps": steps_n, "batch": batch,
            "batch_source": base_batch_note, "seq": r0.seq or None, "precision": r0.precision,
            "optimizer": optimizer, "gpus_max": gpus_max, "budget_usd": budget, "deadline_days": deadline_days,
            "price_usd_per_device_hour": unit_price, "front": [f[2] for f in front], "stats": stats}


def to_json_dict(res: dict) -> dict:
    d = {k: v for k, v in res.items() if k != "front"}
    d["front"] = [asdict(x) for x in res["front"]]
    return d
