"""Communication and whole-run arithmetic.

Collectives over N devices with per-device link bandwidth B (one direction),
bandwidth term only (Thakur et al. 2005; Patarasuk & Yuan 2009):
    ring all-reduce   2(N-1)/N * bytes / B
    all-gather        (N-1)/N * bytes / B     (bytes = the gathered result)
    reduce-scatter    (N-1)/N * bytes / B
    point-to-point    bytes / B
"""
from __future__ import annotations

import math


def allreduce_time(nbytes: float, n: int, bandwidth: float) -> float:
    return 2.0 * (n - 1) / n * nbytes / bandwidth if n > 1 else 0.0


def allgather_time(nbytes: float, n: int, bandwidth: float) -> float:
    return (n - 1) / n * nbytes / bandwidth if n > 1 else 0.0


reduce_scatter_time = allgather_time


def p2p_time(nbytes: float, bandwidth: float) -> float:
    return nbytes / bandwidth


def _group_bw(hw, group: int, inner: int) -> tuple[float, str]:
    """Bandwidth of a group of ``group`` devices whose members are ``inner``
    devices apart: inside one node if the group spans <= devices_per_node,
    else the per-device inter-node link (a ring crossing nodes runs at the
    slowest link it uses)."""
    ic = hw.interconnect
    eff = hw.efficiency.comm
    if group * inner <= ic.devices_per_node:
        return ic.intra_node.bandwidth * eff, ic.intra_node.name or "intra-node"
    return ic.inter_node.bandwidth * eff, ic.inter_node.name or "inter-node"


def _coll(kind: str, nbytes: float, n: int, bw: float) -> tuple[float, float]:
    """(time s, bytes sent per device) of one ring collective."""
    if n <= 1:
        return 0.0, 0.0
    if kind == "all-reduce":
        return allreduce_time(nbytes, n, bw), 2.0 * (n - 1) / n * nbytes
    return allgather_time(nbytes, n, bw), (n - 1) / n * nbytes      # all-gather / reduce-scatter


def step_comm(r, spec, p, stage_params: float, dtypes: dict, fwd_mb: float, bwd_mb: float,
              tied_embedding_params: float = 0.0) -> dict:
    """Communication per optimizer step on one device (the busiest pipeline stage).

    ``stage_params``: parameters this device holds before ZeRO sharding;
    ``fwd_mb`` / ``bwd_mb``: its forward / backward time for one micro-batch
    (the windows communication can hide behind). Rank order as Megatron-LM:
    tp fastest, then dp, then pp, so a dp group's members are tp apart.

    * data parallel, per step with m = accum micro-batches (Rajbhandari et al.
      2020, ZeRO sec. 7: volumes per device of Psi elements):
        stage 0: all-reduce of gradients once (2 Psi), overlapped with the last
                 micro-batch's backward (PyTorch DDP buckets, Li et al. 2020);
        stage 1: reduce-scatter gradients + all-gather updated parameters (2 Psi);
        stage 2: as stage 1, but gradients are reduce-scattered every micro-batch
                 (they are partitioned, so cannot be accumulated whole): m Psi + Psi;
        stage 3: all-gather parameters in forward and again in backward and
                 reduce-scatter gradients, every micro-batch: 3 Psi per micro-batch
                 (sec. 7.2.2: 1.5x the data-parallel volume).
      Gradient reduce-scatters / all-reduces hide behind backward and ZeRO-3
      parameter gathers behind forward + backward when ``overlap_comm``; the
      all-gather of updated parameters after the optimizer step is exposed.
    * tensor parallel: per layer 2 all-reduces of b*s*h activations in forward
      and 2 in backward (Megatron-LM, Shoeybi et al. 2019, sec. 3, Fig. 3);
      +2 with full recomputation (the forward is re-run); sequence parallelism
      replaces each by a reduce-scatter + all-gather of the same volume
      (Korthikanti et al. 2022, sec. 4.2.2). The vocabulary-parallel embedding
      (first stage) and LM head (last stage) add one all-reduce each. Exposed.
    * pipeline parallel: per micro-batch one activation send forward and one
      gradient send backward per model chunk (x interleave), b*s*h/t bytes with
      the scatter/gather optimisation (Narayanan et al. 2021, sec. 4.1). Exposed.
      Tied input/output embeddings on the first and last stage are all-reduced
      once per step (Narayanan et al. 2021; Megatron-LM embedding group).
    """
    wl = r.wl
    hw = r.hw
    dp, tp, pp = r.dp, wl.tp, wl.pp
    m = r.accum
    detail = {}
    exposed = 0.0
    total = 0.0
    if dp > 1:
        bw, link = _group_bw(hw, dp, tp)
        G = stage_params * dtypes["grad"]
        W = stage_params * dtypes["weight"]
        z = wl.zero
        if z == 0:
            colls = [("all-reduce", "gradients", G, 1, "bwd")]
        elif z == 1:
            colls = [("reduce-scatter", "gradients", G, 1, "bwd"), ("all-gather", "parameters", W, 1, None)]
        elif z == 2:
            colls = [("reduce-scatter", "gradients", G, m, "bwd_all"), ("all-gather", "parameters", W, 1, None)]
        else:
            colls = [("all-gather", "parameters (forward)", W, m, "all"),
                     ("all-gather", "parameters (backward)", W, m, "all"),
                     ("reduce-scatter", "gradients", G, m, "all")]
        windows = {"bwd": bwd_mb, "bwd_all": m * bwd_mb, "all": m * (fwd_mb + bwd_mb)}
        t = vol = 0.0
        hideable = {}
        rows = []
        for kind, what, nbytes, times, win in colls:
            ct, cv = _coll(kind, nbytes, dp, bw)
            t += times * ct
            vol += times * cv
            if win:
                hideable[win] = hideable.get(win, 0.0) + times * ct
            rows.append({"collective": kind, "tensor": what, "bytes": nbytes, "times": times})
        if wl.overlap_comm:
            vis = t - sum(hideable.values()) + sum(max(0.0, v - windows[w]) for w, v in hideable.items())
        else:
            vis = t
        detail["data_parallel"] = {"time_s": t, "exposed_s": vis, "bytes": G, "volume_bytes": vol, "link": link,
                                   "group": dp, "zero": z, "collectives": rows}
        total += t
        exposed += vis
    layers = _layers(spec)
    act = (r.micro_batch * _tokens_per_sample(r, spec) * spec.d_model * p.act_bytes) if layers else 0.0
    if tp > 1 and layers:
        bw, link = _group_bw(hw, tp, 1)
        n_ar = 4 + (2 if wl.recompute == "full" else 0)
        vocab = (2 if pp == 1 else 1) if getattr(spec, "lm_head", False) else 0
        per_mb = n_ar * layers / pp + vocab
        ct, cv = _coll("all-reduce", act, tp, bw)
        t = m * per_mb * ct
        detail["tensor_parallel"] = {"time_s": t, "exposed_s": t, "bytes": act, "volume_bytes": m * per_mb * cv,
                                     "link": link, "group": tp, "allreduces_per_layer": n_ar,
                                     "allreduces_per_micro_batch": per_mb}
        total += t
        exposed += t
    if pp > 1 and layers:
        bw, link = _group_bw(hw, pp, tp * dp)
        msg = act / tp
        n = m * 2 * wl.interleave
        t = n * p2p_time(msg, bw)
        detail["pipeline_parallel"] = {"time_s": t, "exposed_s": t, "bytes": msg, "volume_bytes": n * msg,
                                       "link": link, "group": pp, "sends": n}
        total += t
        exposed += t
        if tied_embedding_params:
            e = tied_embedding_params * dtypes["grad"]
            bw2, link2 = _group_bw(hw, pp, tp * dp)
            ct, cv = _coll("all-reduce", e, 2, bw2)
            detail["embedding_sync"] = {"time_s": ct, "exposed_s": ct, "bytes": e, "volume_bytes": cv,
                                        "link": link2, "group": 2}
            total += ct
            exposed += ct
    return {"total_s": total, "exposed_s": exposed, "detail": detail}


def _layers(spec) -> int:
    from .specs.model import TransformerSpec, ViTSpec
    if isinstance(spec, TransformerSpec):
        return spec.layers + (spec.decoder_layers or 0 if spec.structure == "encoder-decoder" else 0)
    if isinstance(spec, ViTSpec):
        return spec.layers
    return 0


def _tokens_per_sample(r, spec) -> int:
    from .specs.model import ViTSpec
    if isinstance(spec, ViTSpec):
        return (r.image // spec.patch_size) ** 2 + 1
    return r.seq


def run_cost(step_s: float, steps: float, devices: int, price: float | None, tdp_watts: float,
             utilization_power: float = 1.0, pue: float = 1.0) -> dict:
    """Wall time, device-hours, cost (device-hours x price per device-hour) and
    energy (device-hours x TDP x utilisation x PUE) of ``steps`` steps."""
    t = steps * step_s
    dh = t / 3600 * devices
    return {"train_time_s": t, "device_hours": dh, "cost_usd": dh * price if price else None,
            "energy_kwh": dh * tdp_watts * utilization_power * pue / 1000.0}


def run_totals(r, step_s: float, units_per_s: float, step_model_flops: float, params: int) -> dict:
    """A whole run: steps from --tokens, --steps or --epochs; wall time,
    device-hours, cost, energy (TDP x utilisation x PUE)."""
    wl = r.wl
    per_step_units = wl.batch * (units_per_s * step_s / wl.batch if wl.batch else 0)
    if abs(per_step_units - round(per_step_units)) <= 1e-9 * per_step_units:
        per_step_units = float(round(per_step_units))   # a count (batch x tokens): undo the x/t*t rounding
    steps = None
    if wl.steps:
        steps = float(wl.steps)
    elif wl.tokens:
        steps = wl.tokens / per_step_units if per_step_units else None
    elif wl.epochs:
        if wl.dataset_tokens:
            steps = wl.epochs * wl.dataset_tokens / per_step_units if per_step_units else None
        elif wl.dataset_samples:
            steps = wl.epochs * wl.dataset_samples / wl.batch
    out = {"steps": steps, "train_time_s": None, "train_flops": None, "device_hours": None, "cost_usd": None,
           "energy_kwh": None, "price_usd_per_device_hour": None}
    price = wl.price or (r.hw.price.usd_per_hour if r.hw.price else None)
    out["price_usd_per_device_hour"] = price
    if steps is None:
        return out
    steps = math.ceil(steps - 1e-9)
    out.update(steps=steps, train_flops=steps * step_model_flops,
               **run_cost(step_s, steps, r.gpus, price, r.hw.tdp_watts, wl.utilization_power, wl.pue))
    if wl.tokens or wl.dataset_tokens:
        tokens = steps * per_step_units
        out["train_tokens"] = tokens
        out["six_nd_train_flops"] = 6.0 * params * tokens
    return out
