"""--explain: each headline number as formula = inputs = value, with its source."""
from __future__ import annotations

from .units import fmt_bytes, fmt_flops, fmt_time


def _e(name, formula, inputs, value, source):
    return {"name": name, "formula": formula, "inputs": inputs, "value": value, "source": source}


def explain_train(rep, r) -> list[dict]:
    v = rep.values
    wl = r.wl
    hw = r.hw
    peak = hw.peak_flops(r.precision)
    out = [
        _e("params", "sum of op parameters (tied weights once)", f"{len(rep.ops)} ops", v["params"],
           "reference implementation named in the model YAML"),
        _e("forward_flops", "sum over ops of 2*MACs (+ elementwise)", f"batch {wl.batch}",
           v["forward_flops"], "book 1.2.2 (2mnk per matmul); Kaplan et al. 2020"),
        _e("backward_flops", "2x forward for matmuls, per-op rules otherwise",
           fmt_flops(v["forward_flops"]), v["backward_flops"], "book 2.3.1; costmodel.ops module docstring"),
    ]
    if v.get("six_nd_flops"):
        out.append(_e("six_nd_flops", "6 * N * tokens", f"N={v['params']:,} tokens={wl.batch * r.seq:,}",
                      v["six_nd_flops"], "Kaplan et al. 2020 sec. 2.1; the op count adds attention "
                      "(2*n^2*d per layer fwd) and non-matmul work, and omits nothing"))
    out += [
        _e("weight_bytes", "params_per_device * bytes(weight)", f"{wl.zero=} {wl.tp=} {wl.pp=}",
           v["weight_bytes"], "ZeRO (Rajbhandari et al. 2020) sec. 3.1"),
        _e("optimizer_bytes", f"states({wl.optimizer}) / (dp if ZeRO>=1)", f"dp={r.dp}", v["optimizer_bytes"],
           "ZeRO sec. 3.1 (Adam: 8 B/param fp32); book 2.5.1"),
        _e("activation_bytes", "saved-for-backward bytes of one micro-batch on the stage x in-flight "
           "micro-batches (first stage: min(pp, accum)) + one layer's recompute working set",
           f"recompute={wl.recompute} flash={wl.flash} micro_batch={r.micro_batch} "
           f"per micro-batch={fmt_bytes(v['activation_bytes_per_micro_batch'])} "
           f"in flight={v['pipeline_in_flight']:g} stage={v['memory_stage']}", v["activation_bytes"],
           "Korthikanti et al. 2022 sec. 4 (34sbh + 5as^2b per layer at 16-bit, + 16sb fp32 norm statistics)"),
        _e("step_time_s", "accum*(fwd+bwd+recompute of the slowest stage) + optimizer + exposed comm + bubble",
           f"accum={r.accum} fwd={fmt_time(v['forward_time_s'])} bwd={fmt_time(v['backward_time_s'])} "
           f"recompute={fmt_time(v['recompute_time_s'])} optimizer={fmt_time(v['optimizer_time_s'])} "
           f"comm={fmt_time(v['exposed_comm_time_s'])} bubble={fmt_time(v['bubble_time_s'])}",
           v["step_time_s"], "roofline per op (Williams et al. 2009); Narayanan et al. 2021 sec. 2.2"),
        _e("bubble_time_s", "(pp - 1) / interleave * (fwd + bwd + recompute of one micro-batch)",
           f"pp={wl.pp} accum={r.accum} interleave={wl.interleave} -> (p-1)/(v*m) = "
           f"{(wl.pp - 1) / (wl.interleave * r.accum):.3f} of compute", v["bubble_time_s"],
           "Narayanan et al. 2021 sec. 2.2.1-2.2.2 (book 11.8.3 line 7365 gives ~N/M)"),
        _e("comm_time_s", "ring all-reduce 2(N-1)/N*bytes/B, all-gather and reduce-scatter (N-1)/N*bytes/B, "
           "p2p bytes/B, per collective; exposed = not hidden behind backward (overlap_comm)",
           "; ".join(f"{k}: {fmt_time(d['time_s'])} on {d['link']} x{d['group']}" for k, d in v["comm"].items())
           or "single device", v["comm_time_s"], "Thakur et al. 2005; ZeRO sec. 7; Megatron-LM sec. 3"),
        _e("mfu", "model matmul FLOPs (6N + 12*L*s*d per token, no recomputation) / (step * devices * peak)",
           f"model FLOPs={fmt_flops(v['model_flops'])} peak={fmt_flops(peak)}/s devices={r.gpus}", v["mfu"],
           "PaLM (Chowdhery et al. 2022) app. B"),
        _e("hfu", "hardware matmul FLOPs (+ recomputation) / (step * devices * peak)",
           f"hardware FLOPs={fmt_flops(v['hardware_flops'])}", v["hfu"],
           "PaLM app. B; Megatron's 96*B*s*l*h^2*(1 + s/6h + V/16lh) with full recompute"),
    ]
    if v.get("train_time_s"):
        out.append(_e("train_time_s", "steps * step_time", f"steps={v['steps']}", v["train_time_s"], "-"))
        if v.get("six_nd_train_flops"):
            ratio = v["train_flops"] / v["six_nd_train_flops"]
            out.append(_e("train_flops", "steps * (forward + backward op FLOPs), beside 6*N*D",
                          f"op-level {fmt_flops(v['train_flops'])} vs 6ND {fmt_flops(v['six_nd_train_flops'])} "
                          f"(x{ratio:.4f}): 6ND counts 2 FLOPs per parameter per token forward and 4 backward; "
                          f"the op count adds the attention products QK^T and PV (12*L*s*d per token, "
                          + (f"+s/(6d) = +{r.seq / (6 * r.spec.d_model):.2%} for a decoder" if
                             getattr(r.spec, "d_model", None) else "none in an RNN")
                          + ") and elementwise work, "
                          f"and drops the embedding lookups 6ND charges as matmuls",
                          v["train_flops"], "Kaplan et al. 2020 sec. 2.1; PaLM app. B; Brown et al. 2020 "
                          "(3.14e23 for GPT-3 = 6 * 174.6e9 * 300e9)"))
    if v.get("cost_usd"):
        out.append(_e("cost_usd", "device_hours * price", f"{v['device_hours']:.1f} h * "
                      f"${v['price_usd_per_device_hour']}/h", v["cost_usd"], "hardware YAML price (source, date)"))
    if v.get("energy_kwh"):
        out.append(_e("energy_kwh", "device_hours * TDP * utilisation * PUE / 1000",
                      f"TDP={hw.tdp_watts} W", v["energy_kwh"], "hardware datasheet TDP"))
    existing = wl.zero_grad == "zero" or r.accum > 1
    out.append(_e("backward_working_bytes",
                  "max over ops of (grad-out + grad-in + temporaries of its backward [+ its weight-gradient "
                  "temporary when .grad exists] - saved bytes of the ops after it, already freed); a shared "
                  "vocabulary table adds its buffered gradient, the new one and their sum",
                  f"at {v['backward_working_op'] or '-'}; .grad exists during backward: {existing} "
                  f"(zero_grad={wl.zero_grad}, accum={r.accum})", v["backward_working_bytes"],
                  "PyTorch autograd (torch/csrc/autograd/engine.cpp, input_buffer.cpp, "
                  "functions/accumulate_grad.h; saved tensors freed after their node runs); what is saved: "
                  "Korthikanti et al. 2022 sec. 4; loss: 2 x rows x vocab x 4 B (nll_loss_backward + "
                  "log_softmax_backward); costmodel.memory.backward_bytes"))
    out.append(_e("optimizer_temp_bytes", "single-tensor Adam(W): 2 x largest tensor x state bytes (sqrt, then "
                  "/ bias correction); foreach: all parameters x state bytes (_foreach_sqrt); fused, SGD: 0; "
                  "/ dp under ZeRO >= 1", f"optimizer={wl.optimizer} optimizer_impl={wl.optimizer_impl}",
                  v["optimizer_temp_bytes"], "torch/optim/adam.py (_single_tensor_adam, _multi_tensor_adam)"))
    phase = v["memory_peak_phase"]
    out.append(_e("total_memory_bytes",
                  "states + max(activations + backward working set [+ ZeRO-3 unit], optimizer-step temporaries)"
                  " + slack x that + context",
                  f"peak at the {phase}: forward/backward {fmt_bytes(v['forward_backward_peak_bytes'])} vs "
                  f"optimizer step {fmt_bytes(v['optimizer_step_peak_bytes'])} (live tensors); "
                  + ", ".join(f"{n}={fmt_bytes(b)}" for n, b in rep.memory_lines if b),
                  v["total_memory_bytes"],
                  "book 2.5.2; ZeRO sec. 3; activations are freed before the optimizer step runs"))
    return out


def explain_inference(rep, r) -> list[dict]:
    v = rep.values
    out = [
        _e("params", "sum of op parameters", "", v["params"], "reference implementation"),
        _e("forward_flops", "sum over ops of 2*MACs (+ elementwise)", f"batch {r.wl.batch}", v["forward_flops"],
           "book 1.2.2"),
        _e("kv_cache_bytes", "2 * layers * batch * kv_heads * d_head * context * bytes", "", v["kv_cache_bytes"],
           "book 10.6 / Pope et al. 2022"),
        _e("forward_time_s", "sum of per-op roofline times", "", v["forward_time_s"], "Williams et al. 2009"),
    ]
    if v.get("decode_time_per_token_s"):
        out.append(_e("decode_time_per_token_s", "max(sum of decode-op times, (weights + KV cache) / bandwidth)",
                      "", v["decode_time_per_token_s"], "Pope et al. 2022 (memory-bound decoding)"))
    return out
