"""Render a Report as a table (rich), JSON, CSV or Markdown.

Every format renders the same rows: the headline totals, then the breakdown
tree (model > stack > block > op) cut at the requested detail level.
"""
from __future__ import annotations

import csv
import io
import json
import math

from .units import fmt_bytes, fmt_bytes_both, fmt_flops, fmt_params, fmt_rate, fmt_time, si

DETAILS = ("model", "block", "op")


def breakdown(rep, detail: str = "block") -> list[dict]:
    """Rows of the cost tree at a detail level, totals over repeats and both
    passes (forward + backward in training)."""
    train = rep.workload.get("mode") == "train"
    groups: dict[str, dict] = {}
    order = []
    total_t = sum(c.count * (c.fwd_time + (c.bwd_time if train else 0)) for c in rep.ops) or 1.0
    parents = rep.tree.parents() if detail == "block" else {}
    for c in rep.ops:
        parts = c.path.split("/")
        if detail == "op":
            key, count, kind = c.path, c.count, c.op.kind
        elif detail == "block":
            key = parents.get(c.path, "/".join(parts[:-1]))
            count, kind = None, ("block" if key != c.path else c.op.kind)
        else:
            key = parts[0]
            count, kind = None, "model"
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"name": key, "kind": kind, "count": count, "flops": 0.0, "bytes": 0.0, "params": 0,
                               "saved_bytes": 0.0, "time_s": 0.0, "tc": 0.0, "tm": 0.0, "repeat": 1}
            order.append(key)
        f = c.op.fwd_flops + (c.op.bwd_flops if train else 0)
        b = c.op.fwd_bytes + (c.op.bwd_bytes if train else 0)
        t = c.fwd_time + (c.bwd_time if train else 0)
        g["flops"] += c.count * f
        g["bytes"] += c.count * b
        g["params"] += c.count * c.op.params
        g["saved_bytes"] += c.count * c.op.saved_bytes
        g["time_s"] += c.count * t
        g["tc" if c.bound == "compute" else "tm"] += c.count * t
        if detail == "block":
            g["count"] = c.count
    out = []
    for k in order:
        g = groups[k]
        g["intensity"] = g["flops"] / g["bytes"] if g["bytes"] else None
        g["bound"] = "compute" if g["tc"] >= g["tm"] and g["time_s"] else ("memory" if g["time_s"] else "-")
        g["share"] = g["time_s"] / total_t
        del g["tc"], g["tm"], g["repeat"]
        out.append(g)
    return out


def headline(rep) -> list[tuple[str, str]]:
    v, w = rep.values, rep.workload
    train = w["mode"] == "train"
    rows = [("parameters", f"{fmt_params(v['params'])} ({v['params']:,})")]
    if train:
        rows.append(("FLOPs / step", f"{fmt_flops(v['step_flops'])}  (forward {fmt_flops(v['forward_flops'])}, "
                                     f"backward {fmt_flops(v['backward_flops'])}"
                                     + (f", recompute {fmt_flops(v['recompute_flops'])}" if v.get('recompute_flops') else "")
                                     + ")"))
        if v.get("six_nd_flops"):
            rows.append(("  6·N·D for comparison", fmt_flops(v["six_nd_flops"])))
    else:
        rows.append(("FLOPs / forward", fmt_flops(v["forward_flops"])))
    rows.append(("  matmul/conv only", fmt_flops(v["forward_matmul_flops"]) + " forward (torch flop_counter's count)"))
    rows.append(("memory / device", ""))
    for name, b in rep.memory_lines:
        if b:
            rows.append((f"  {name}", fmt_bytes_both(b)))
    verdict = "fits" if v["fits"] else f"does NOT fit (short by {fmt_bytes(-v['memory_headroom_bytes'])})"
    rows.append(("  total", f"{fmt_bytes_both(v['total_memory_bytes'])} of {fmt_bytes_both(v['memory_capacity_bytes'])}"
                            f" — {verdict}"))
    if train and v.get("memory_peak_phase"):
        if v["memory_peak_phase"] == "backward":
            rows.append(("  peak at", f"backward (optimizer step: {fmt_bytes(v['optimizer_step_peak_bytes'])} live)"))
        else:
            rows.append(("  peak at", f"optimizer step (forward/backward: "
                                      f"{fmt_bytes(v['forward_backward_peak_bytes'])} live)"))
    if train:
        rows.append(("  largest batch that fits", f"{v['max_batch']} (micro-batch {v['max_micro_batch']})"))
    else:
        rows.append(("  largest batch that fits", str(v["max_batch"])))
    rows.append(("time", ""))
    if train:
        rows += [("  forward", fmt_time(v["forward_time_s"])), ("  backward", fmt_time(v["backward_time_s"]))]
        if v.get("recompute_time_s"):
            rows.append(("  recompute", fmt_time(v["recompute_time_s"])))
        rows.append(("  optimizer step", fmt_time(v["optimizer_time_s"])))
        if v.get("comm_time_s"):
            rows.append(("  communication (exposed)", f"{fmt_time(v['exposed_comm_time_s'])} of {fmt_time(v['comm_time_s'])}"))
        if v.get("bubble_time_s"):
            rows.append(("  pipeline bubble", fmt_time(v["bubble_time_s"])))
        rows.append(("  step", f"{fmt_time(v['step_time_s'])}  ({v['bound']}-bound)"))
    else:
        rows.append(("  forward / prefill", f"{fmt_time(v['forward_time_s'])}  ({v['bound']}-bound)"))
        if v.get("decode_time_per_token_s"):
            rows.append(("  decode / token", f"{fmt_time(v['decode_time_per_token_s'])}  ({v.get('decode_bound')}-bound)"))
            rows.append(("  generation total", fmt_time(v["generation_time_s"])))
    if "tokens_per_s" in v:
        label = "throughput (decode)" if v.get("decode_time_per_token_s") else "throughput"
        rows.append((label, fmt_rate(v["tokens_per_s"], "token")))
    if "samples_per_s" in v and "tokens_per_s" not in v:
        rows.append(("throughput", fmt_rate(v["samples_per_s"], "sample")))
    rows.append(("MFU" if train else "MFU (forward / prefill)", f"{v['mfu']:.1%}" + (f"  (HFU {v['hfu']:.1%})" if train and v.get('hfu') else "")))
    rows.append(("arithmetic intensity", f"{v['arithmetic_intensity']:.1f} FLOP/byte"))
    if train and v.get("train_time_s"):
        rows.append(("run", ""))
        rows.append(("  steps", f"{v['steps']:,}"))
        rows.append(("  wall time", fmt_time(v["train_time_s"])))
        rows.append(("  total FLOPs", fmt_flops(v["train_flops"])
                     + (f"  (6·N·D: {fmt_flops(v['six_nd_train_flops'])})" if v.get("six_nd_train_flops") else "")))
        rows.append(("  device-hours", f"{v['device_hours']:,.0f}"))
        if v.get("cost_usd") is not None:
            rows.append(("  cost", f"${v['cost_usd']:,.0f} at ${v['price_usd_per_device_hour']:.2f}/device-hour"))
        rows.append(("  energy", f"{v['energy_kwh']:,.0f} kWh"))
    return rows


def _title(rep) -> str:
    w = rep.workload
    bits = [w["mode"], f"batch {w['batch']}"]
    if w.get("seq"):
        bits.append(f"seq {w['seq']}")
    if w.get("target_seq") and w.get("target_seq") != w.get("seq"):
        bits.append(f"target seq {w['target_seq']}")
    if w.get("image"):
        bits.append(f"image {w['image']}")
    bits.append(w["precision"])
    if w["gpus"] > 1:
        bits.append(f"{w['gpus']} devices (dp {w['dp']}, tp {w['tp']}, pp {w['pp']}, ZeRO {w['zero']})")
    if w.get("micro_batch") != w["batch"]:
        bits.append(f"micro-batch {w['micro_batch']} x {w['grad_accum']} accum")
    if w.get("recompute") != "none":
        bits.append(f"recompute {w['recompute']}")
    if w.get("flash"):
        bits.append("flash attention")
    return f"{rep.model} on {rep.hardware}: " + ", ".join(bits)


def to_json(rep, detail: str = "op") -> str:
    d = rep.to_dict(ops=True)
    if detail != "op":
        d["breakdown"] = breakdown(rep, detail)
    return json.dumps(_clean(d), indent=2)


def _clean(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


CSV_COLS = ("name", "kind", "count", "flops", "bytes", "params", "saved_bytes", "time_s", "share", "intensity", "bound")


def to_csv(rep, detail: str = "block") -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLS)
    for r in breakdown(rep, detail):
        w.writerow([r.get(c) if r.get(c) is not None else "" for c in CSV_COLS])
    return buf.getvalue()


def to_markdown(rep, detail: str = "block") -> str:
    lines = [f"### {_title(rep)}", "", "| quantity | value |", "|---|---|"]
    for k, v in headline(rep):
        lines.append(f"| {k.strip()} | {v} |")
    lines += ["", "| " + " | ".join(("name", "count", "FLOPs", "bytes", "params", "time", "share", "intensity", "bound")) + " |",
              "|" + "---|" * 9]
    for r in breakdown(rep, detail):
        lines.append(f"| {r['name']} | {r['count'] or ''} | {fmt_flops(r['flops'])} | {fmt_bytes(r['bytes'])} | "
                     f"{r['params']:,} | {fmt_time(r['time_s'])} | {r['share']:.1%} | "
                     f"{_fmt_int(r['intensity'])} | {r['bound']} |")
    return "\n".join(lines) + "\n"


def _fmt_int(x):
    return "" if x is None else f"{x:.1f}"


def print_table(rep, detail: str = "block", console=None, explain: bool = False):
    from rich.console import Console
    from rich.table import Table
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=120)
    t = Table(title=_title(rep), show_header=False, title_justify="left", box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in headline(rep):
        t.add_row(k, v)
    console.print(t)
    if detail != "model" or True:
        b = Table(title=f"breakdown ({detail}; forward{' + backward' if rep.workload['mode'] == 'train' else ''}, "
                        "per device, one micro-batch)", title_justify="left")
        for c, j in (("name", "left"), ("count", "right"), ("FLOPs", "right"), ("bytes", "right"),
                     ("params", "right"), ("time", "right"), ("share", "right"), ("FLOP/B", "right"),
                     ("bound", "left")):
            b.add_column(c, justify=j, no_wrap=(c != "name"), overflow="fold", min_width=(18 if c == "name" else None))
        prefix = rep.model + "/"
        for r in breakdown(rep, detail):
            name = r["name"][len(prefix):] if r["name"].startswith(prefix) else r["name"]
            b.add_row(name or rep.model, str(r["count"] or ""), fmt_flops(r["flops"]), fmt_bytes(r["bytes"]),
                      f"{r['params']:,}" if r["params"] else "", fmt_time(r["time_s"]), f"{r['share']:.1%}",
                      "" if r["intensity"] is None else f"{r['intensity']:.1f}", r["bound"])
        console.print(b)
    if explain:
        print_explain(rep, console)


def print_explain(rep, console):
    from rich.table import Table
    t = Table(title="how each number is computed", title_justify="left")
    for c in ("quantity", "formula", "inputs", "value", "source"):
        t.add_column(c, overflow="fold")
    for e in rep.explain:
        v = e["value"]
        vs = f"{v:.4g}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else str(v))
        t.add_row(e["name"], e["formula"], e["inputs"], vs, e["source"])
    console.print(t)
