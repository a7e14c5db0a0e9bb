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
    devices apart: inside one node if the group spans <= devices_per_node."""
    ic = hw.interconnect
    eff = hw.efficiency.comm
    if group * inner <= ic.devices_per_node:
        return ic.intra_node.bandwidth * eff, ic.intra_node.name or "intra-node"
    return ic.inter_node.bandwidth * eff, ic.inter_node.name or "inter-node"


def step_comm(r, spec, p, dev_params: float, dtypes: dict, costs, bwd_time: float) -> dict:
    """Communication per optimizer step on one device.

    * data parallel (dp > 1): gradients all-reduced once per step
      (ZeRO-1/2: reduce-scatter + all-gather, same volume; ZeRO-3 adds a
      parameter all-gather in forward and in backward: 1.5x, Rajbhandari et
      al. 2020 sec. 7). Overlapped with backward when ``overlap_comm``.
    * tensor parallel (tp > 1): per layer 2 all-reduces of b*s*d activations
      in forward and 2 in backward (Megatron-LM, Shoeybi et al. 2019, fig. 3);
      +2 with full recompute. Not overlapped.
    * pipeline parallel (pp > 1): per micro-batch one b*s*d send forward and
      one backward at each stage boundary.
    """
    wl = r.wl
    hw = r.hw
    dp, tp, pp = r.dp, wl.tp, wl.pp
    detail = {}
    exposed = 0.0
    total = 0.0
    if dp > 1:
        bw, link = _group_bw(hw, dp, tp * pp)
        grad_bytes = dev_params * dtypes["grad"]
        t = allreduce_time(grad_bytes, dp, bw)
        if wl.zero >= 3:
            t += 2 * allgather_time(dev_params * dtypes["weight"], dp, bw) - allgather_time(grad_bytes, dp, bw) * 0
            t = t * 1.0
        vis = max(0.0, t - bwd_time) if wl.overlap_comm else t
        detail["data_parallel"] = {"time_s": t, "exposed_s": vis, "bytes": grad_bytes, "link": link, "group": dp}
        total += t
        exposed += vis
    layers = _layers(spec)
    if tp > 1 and layers:
        bw, link = _group_bw(hw, tp, 1)
        act = r.micro_batch * _tokens_per_sample(r, spec) * spec.d_model * p.act_bytes
        n_ar = 4 + (2 if wl.recompute == "full" else 0)
        t = r.accum * layers / pp * n_ar * allreduce_time(act, tp, bw)
        detail["tensor_parallel"] = {"time_s": t, "exposed_s": t, "bytes": act, "link": link, "group": tp,
                                     "allreduces_per_layer": n_ar}
        total += t
        exposed += t
    if pp > 1 and layers:
        bw, link = _group_bw(hw, pp, tp * dp)
        act = r.micro_batch * _tokens_per_sample(r, spec) * spec.d_model * p.act_bytes
        if wl.sequence_parallel and tp > 1:
            act /= tp
        t = r.accum * 2 * p2p_time(act, bw) * wl.interleave
        detail["pipeline_parallel"] = {"time_s": t, "exposed_s": t, "bytes": act, "link": link, "group": pp}
        total += t
        exposed += t
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


def run_totals(r, step_s: float, units_per_s: float, step_model_flops: float, params: int) -> dict:
    """A whole run: steps from --tokens, --steps or --epochs; wall time,
    device-hours, cost, energy (TDP x utilisation x PUE)."""
    wl = r.wl
    per_step_units = wl.batch * (units_per_s * step_s / wl.batch if wl.batch else 0)
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
    t = steps * step_s
    dh = t / 3600 * r.gpus
    out.update(steps=steps, train_time_s=t, train_flops=steps * step_model_flops, device_hours=dh,
               cost_usd=dh * price if price else None,
               energy_kwh=dh * r.hw.tdp_watts * wl.utilization_power * wl.pue / 1000.0)
    if wl.tokens or wl.dataset_tokens:
        tokens = steps * per_step_units
        out["train_tokens"] = tokens
        out["six_nd_train_flops"] = 6.0 * params * tokens
    return out
