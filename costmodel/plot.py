"""Pictures (optional extra ``plot``: matplotlib, imported only here, lazily).

* ``roofline_figure``: the device roofline (Williams, Waterman and Patterson
  2009, "Roofline: an insightful visual performance model", CACM 52(4)) with
  one ceiling per dtype the device supports, the HBM slope, and each op of a
  report as a point at its arithmetic intensity (FLOPs / HBM bytes) and the
  FLOP/s it attains in the model, its area proportional to its share of time.
* ``sweep_figure``: time, memory or cost of a what-if sweep against the swept field.

Figures are built with matplotlib's object API (``Figure`` + Agg canvas), so
no global pyplot state or backend is touched.
"""
from __future__ import annotations

import math
import os
import tempfile

from .errors import CostModelError

INSTALL_HINT = "matplotlib is not installed: pip install 'costmodel[plot]'"

CLASS_COLORS = {"matmul": "#1f77b4", "attention": "#d62728", "conv": "#2ca02c", "elementwise": "#ff7f0e"}
DTYPE_COLORS = {"fp64": "#7f7f7f", "fp32": "#8c564b", "tf32": "#9467bd", "fp16": "#17becf", "bf16": "#1f77b4",
                "fp8": "#e377c2", "int8": "#bcbd22"}


def _mpl():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise CostModelError(INSTALL_HINT) from None
    return Figure, FigureCanvasAgg


def save(fig, path: str, dpi: int = 150):
    """Write atomically (temp file in the same folder + rename)."""
    ext = os.path.splitext(path)[1].lower() or ".png"
    if ext not in (".png", ".svg", ".pdf"):
        raise CostModelError(f"cannot write {path!r}: unknown image type {ext!r} (expected .png, .svg or .pdf)",
                             field="--output")
    d = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".costmodel-", suffix=ext)
    except OSError as e:
        raise CostModelError(f"cannot write {path!r} ({e.strerror}) (expected a writable folder)",
                             field="--output") from None
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format=ext[1:])
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fmt_rate(x: float) -> str:
    from .units import si
    return si(x, "FLOP/s")


def _short(path: str, model: str) -> str:
    return path[len(model) + 1:] if path.startswith(model + "/") else path


# --- roofline --------------------------------------------------------------------
def roofline_points(rep) -> tuple[list[dict], float]:
    """One point per op: intensity (FLOP/byte), attained FLOP/s, share of time.
    Training counts forward + backward. Returns (points, share of time in ops
    that have no FLOPs or no bytes and so have no place on a log-log roofline)."""
    train = rep.workload.get("mode") == "train"
    pts = []
    total = 0.0
    off = 0.0
    for c in rep.ops:
        o = c.op
        f = o.fwd_flops + (o.bwd_flops if train else 0.0)
        b = o.fwd_bytes + (o.bwd_bytes if train else 0.0)
        t = c.fwd_time + (c.bwd_time if train else 0.0)
        total += c.count * t
        if f <= 0 or b <= 0 or t <= 0:
            off += c.count * t
            continue
        pts.append({"path": c.path, "label": _short(c.path, rep.model), "count": c.count, "op_class": o.op_class,
                    "kind": o.kind, "intensity": f / b, "flops_per_s": f / t, "time": c.count * t,
                    "bound": c.bound})
    for p in pts:
        p["share"] = p["time"] / total if total else 0.0
    return pts, (off / total if total else 0.0)


def roofline_figure(rep, hw, path: str, top: int = 10, title: str | None = None):
    Figure, Canvas = _mpl()
    from .engine import memory_efficiency
    from .render import _title
    pts, off_share = roofline_points(rep)
    if not pts:
        raise CostModelError(f"{rep.model} has no op with both FLOPs and memory traffic to plot")
    bw = hw.memory.bandwidth
    dtypes = [d for d in hw.supported_dtypes() if d != "int8"]     # int8 is integer ops, not FLOPs
    used = rep.workload.get("precision")
    peaks = {d: hw.peak_flops(d) for d in dtypes}
    vec = {d: getattr(hw.vector, d) for d in ("fp32", "bf16", "fp16") if getattr(hw.vector, d, None)}
    xs = [p["intensity"] for p in pts]
    ys = [p["flops_per_s"] for p in pts]
    ridge_max = max(hw.ridge_point(d) for d in dtypes)
    x_lo = 10 ** math.floor(math.log10(min(min(xs) / 2, 0.5)))
    x_hi = 10 ** math.ceil(math.log10(max(max(xs) * 3, ridge_max * 6)))
    y_hi = 10 ** math.ceil(math.log10(max(peaks.values()) * 2.5))
    y_lo = 10 ** math.floor(math.log10(max(min(min(ys) / 3, bw * x_lo), y_hi / 1e7)))

    fig = Figure(figsize=(11, 7))
    Canvas(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.94, bottom=0.12)
    # one flat ceiling per distinct peak (dtypes sharing a peak share a line),
    # drawn from its ridge point; a faint guide to the left carries the label
    groups: dict[float, list[str]] = {}
    for d, pk in peaks.items():
        groups.setdefault(pk, []).append(d)
    for pk, ds in sorted(groups.items()):
        ridge = hw.ridge_point(ds[0])
        strong = used in ds
        col = DTYPE_COLORS.get(used if strong else ds[0], "k")
        units = {getattr(hw.peak, d).unit for d in ds}
        ax.plot([ridge, x_hi], [pk, pk], color=col, lw=2.6 if strong else 1.2, alpha=1.0 if strong else 0.7,
                zorder=2)
        ax.plot([x_lo, ridge], [pk, pk], color=col, lw=0.6, ls=":", alpha=0.6, zorder=1)
        ax.text(x_lo * 1.15, pk * 1.06, f"{' / '.join(ds)} {'/'.join(sorted(units))}: {_fmt_rate(pk)}"
                + ("  ← this run" if strong else ""), ha="left", va="bottom", fontsize=8.5, color=col,
                fontweight="bold" if strong else "normal")
    for d, v in vec.items():
        if any(abs(v - pk) / pk < 1e-9 for pk in groups):
            continue                  # same as a listed peak
        ax.plot([v / bw, x_hi], [v, v], color="#555555", lw=0.9, ls="--", alpha=0.7, zorder=1)
        ax.text(x_hi / 1.1, v / 1.08, f"vector {d} (elementwise): {_fmt_rate(v)}", ha="right", va="top",
                fontsize=7.5, color="#555555")
    # the memory slope: HBM bandwidth (achievable fraction dashed when < 1)
    ax.plot([x_lo, ridge_max], [bw * x_lo, bw * ridge_max], color="#333333", lw=1.2, zorder=2)
    me = memory_efficiency(hw)
    if me < 1:
        ax.plot([x_lo, ridge_max], [bw * me * x_lo, bw * me * ridge_max], color="#333333", lw=0.8, ls="--",
                alpha=0.6)
    lx = x_lo * 2.5
    (px0, py0), (px1, py1) = ax.transData.transform([(lx, bw * lx), (lx * 10, bw * lx * 10)])
    ax.text(lx, bw * lx * 1.35, f"HBM {bw / 1e12:.3g} TB/s", rotation=math.degrees(math.atan2(py1 - py0, px1 - px0)),
            rotation_mode="anchor", fontsize=8.5, color="#333333", ha="left", va="bottom")
    # ops
    smax = 900.0
    for cls in ("matmul", "attention", "conv", "elementwise"):
        sel = [p for p in pts if p["op_class"] == cls]
        if not sel:
            continue
        ax.scatter([p["intensity"] for p in sel], [p["flops_per_s"] for p in sel],
                   s=[max(12.0, smax * p["share"]) for p in sel], color=CLASS_COLORS.get(cls, "k"), alpha=0.6,
                   edgecolors="black", linewidths=0.5, label=f"{cls} ops", zorder=3)
    _label_points(fig, ax, sorted(pts, key=lambda p: -p["share"])[:top])
    ax.set_xlabel("arithmetic intensity (FLOPs per byte of HBM traffic)")
    ax.set_ylabel("attained FLOP/s (FLOPs / modelled time)")
    mode = "forward + backward" if rep.workload.get("mode") == "train" else "forward"
    ax.set_title(title or _title(rep), fontsize=11, loc="left")
    note = (f"{hw.display_name}: one line per dtype (flat: peak FLOP/s; slope: HBM bandwidth {bw / 1e12:.3g} TB/s). "
            f"Each point is one op ({mode}, per device, one micro-batch), area ∝ its share of time; "
            f"labels: the largest (up to {top}).")
    if off_share > 0.0005:
        note += f" Ops without FLOPs (lookups, copies): {off_share:.1%} of time, not shown."
    fig.text(0.01, 0.01, note, fontsize=7.5, color="#444444", wrap=True)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    ax.legend(loc="lower right", fontsize=8, markerscale=0.6)
    save(fig, path)
    return pts


def _label_points(fig, ax, pts: list[dict], fontsize: float = 8.0):
    """Label points greedily: try offsets around each point and keep the first
    whose (estimated) text box overlaps no earlier label and stays inside the axes."""
    scale = fig.dpi / 72.0
    boxes: list[tuple[float, float, float, float]] = []
    bbox = ax.get_window_extent()
    anchors = [tuple(ax.transData.transform((p["intensity"], p["flops_per_s"]))) for p in pts]
    cands = [(r * math.cos(a), r * math.sin(a)) for r in (14, 26, 40, 56, 74)
             for a in (math.radians(d) for d in (-30, 30, -60, 60, 150, 210, -90, 90, 0, 180))]
    for p, (x0, y0) in zip(pts, anchors):
        text = f"{p['label']} ({p['share']:.0%})"
        w = 0.56 * fontsize * len(text) * scale
        h = 1.25 * fontsize * scale
        chosen = None
        for dx, dy in cands:
            left = dx >= 0
            bx0 = x0 + dx * scale if left else x0 + dx * scale - w
            by0 = y0 + dy * scale - h / 2
            box = (bx0, by0, bx0 + w, by0 + h)
            if box[0] < bbox.x0 or box[2] > bbox.x1 or box[1] < bbox.y0 or box[3] > bbox.y1:
                continue
            if any(not (box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3]) for b in boxes):
                continue
            if any(box[0] - 4 < ax_ < box[2] + 4 and box[1] - 4 < ay < box[3] + 4 for ax_, ay in anchors):
                continue
            chosen = (dx, dy, box)
            break
        if chosen is None:
            continue                  # no free spot: leave this one unlabelled rather than overprint
        dx, dy, box = chosen
        boxes.append(box)
        ax.annotate(text, (p["intensity"], p["flops_per_s"]), xytext=(dx, dy), textcoords="offset points",
                    fontsize=fontsize, ha="left" if dx >= 0 else "right", va="center",
                    arrowprops=dict(arrowstyle="-", color="#555555", lw=0.8, shrinkA=0, shrinkB=2))


# --- sweeps ----------------------------------------------------------------------
Y_LABELS = {
    "step_time_s": ("step time", "time"), "train_time_s": ("training time", "time"),
    "forward_time_s": ("forward time", "time"), "decode_time_per_token_s": ("decode time per token", "time"),
    "generation_time_s": ("generation time", "time"), "total_memory_bytes": ("memory per device", "bytes"),
    "activation_bytes": ("activation memory", "bytes"), "kv_cache_bytes": ("KV cache", "bytes"),
    "cost_usd": ("cost", "usd"), "mfu": ("MFU", "fraction"), "tokens_per_s": ("throughput", "tokens/s"),
    "samples_per_s": ("throughput", "samples/s"), "energy_kwh": ("energy", "kWh"),
}


def _y_unit(col: str, vals: list[float]) -> tuple[float, str]:
    name, kind = Y_LABELS.get(col, (col, ""))
    if kind == "time" or (not kind and col.endswith("_s") and not col.endswith("per_s")):
        m = max(vals) if vals else 1
        for f, u in ((86400, "days"), (3600, "hours"), (60, "min"), (1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if m >= f * 2 or f == 1e-6:
                return f, f"{name} ({u})"
    if kind == "bytes" or col.endswith("bytes"):
        return 1e9, f"{name} (GB = 1e9 bytes)"
    if kind == "usd" or col.endswith("_usd"):
        return 1.0, f"{name} (USD)"
    if kind == "fraction":
        return 0.01, f"{name} (%)"
    if kind:
        return 1.0, f"{name} ({kind})"
    if "flops" in col:
        return 1e12, f"{col} (TFLOP)"
    return 1.0, col


def default_y(cases) -> list[str]:
    from .whatif import _mode, lookup
    oks = [c for c in cases if c.ok]
    if not oks:
        return ["step_time_s"]
    if any(_mode(c) == "train" for c in oks):
        ys = ["step_time_s", "total_memory_bytes"]
        if any(isinstance(lookup(c, "cost_usd"), (int, float)) and lookup(c, "cost_usd") for c in oks):
            ys.append("cost_usd")
        return ys
    ys = ["forward_time_s"]
    if any(isinstance(lookup(c, "decode_time_per_token_s"), (int, float)) and lookup(c, "decode_time_per_token_s")
           for c in oks):
        ys.append("decode_time_per_token_s")
    return ys + ["total_memory_bytes"]


def sweep_figure(w, cases, path: str, x: str | None = None, ys: list[str] | None = None, max_series: int = 12):
    Figure, Canvas = _mpl()
    from .whatif import _MISSING, _check_columns, fmt_cell, lookup
    swept = w.swept
    if not swept:
        raise CostModelError("the what-if file sweeps nothing (add a sweep: or zip: section to plot against)",
                             file=w.file)
    x = x or (w.doc.plot.x if w.doc.plot and w.doc.plot.x else None) or _numeric_axis(w) or swept[0]
    if x not in swept:
        from .errors import suggest
        raise CostModelError(f"--x {x!r} is not a swept key{suggest(x, swept)} (expected one of: "
                             f"{', '.join(swept)})", field="--x")
    ys = ys or (w.doc.plot.y if w.doc.plot and w.doc.plot.y else None) or default_y(cases)
    _check_columns(ys, cases, w, "--y")
    from .whatif import _match
    ok = [c for c in cases if c.ok
          and all(_match(lookup(c, col), op, want) for col, op, want, _ in w.where)]
    if not ok:
        raise CostModelError("no possible case is left to plot (run `costmodel estimate -f` to see the rows)",
                             file=w.file)
    # x axis of a zip: the chosen key; series: every other swept key
    others = [k for k in swept if k != x and not _zipped_with(w, x, k)]
    xvals = []
    for c in ok:
        v = c.assign.get(x, lookup(c, x))
        if v not in xvals:
            xvals.append(v)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xvals)
    series: dict[tuple, list] = {}
    for c in ok:
        key = tuple((k, c.assign.get(k)) for k in others)
        series.setdefault(key, []).append(c)
    keys = list(series)
    dropped = len(keys) - max_series if len(keys) > max_series else 0
    keys = keys[:max_series]

    fig = Figure(figsize=(9, 3.0 * len(ys) + 1.2))
    Canvas(fig)
    axes = [fig.add_subplot(len(ys), 1, i + 1) for i in range(len(ys))]
    import itertools
    markers = itertools.cycle("os^Dv<>ph*")
    style = {k: next(markers) for k in keys}
    any_nofit = False
    for ax, col in zip(axes, ys):
        allv = [lookup(c, col) for c in ok]
        nums = [float(v) for v in allv if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None]
        scale, label = _y_unit(col, nums)
        for k in keys:
            pts = []
            for c in series[k]:
                xv = c.assign.get(x, lookup(c, x))
                yv = lookup(c, col)
                if yv is _MISSING or yv is None or isinstance(yv, (bool, str, dict)):
                    continue
                px = xv if numeric else xvals.index(xv)
                pts.append((px, yv / scale, lookup(c, "fits")))
            if not pts:
                continue
            pts.sort(key=lambda t: t[0])
            lab = ", ".join(f"{a}={fmt_cell(a, b)}" for a, b in k) or col
            line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=style[k], ms=5, lw=1.4, label=lab)[0]
            bad = [p for p in pts if p[2] is False]
            if bad:
                any_nofit = True
                ax.scatter([p[0] for p in bad], [p[1] for p in bad], s=90, facecolors="none", edgecolors="red",
                           linewidths=1.4, zorder=4)
            del line
        if col == "total_memory_bytes":
            from .units import fmt_bytes_both
            caps = sorted({lookup(c, "memory_capacity_bytes") for c in ok} - {None, _MISSING})
            for cap in caps[:4]:
                ax.axhline(cap / scale, color="red", lw=0.9, ls="--", alpha=0.7)
                ax.text(0.995, cap / scale, f"capacity {fmt_bytes_both(cap)}", transform=ax.get_yaxis_transform(),
                        ha="right", va="top", fontsize=7.5, color="red")
        ax.set_ylabel(label, fontsize=9)
        vals = [v / scale for v in nums if v > 0]
        if vals and max(vals) / min(vals) > 50:
            ax.set_yscale("log")
        if numeric:
            xs = [v for v in xvals if v > 0]
            if xs and len(xs) == len(xvals) and max(xs) / min(xs) >= 8:
                ax.set_xscale("log", base=2)
                ax.set_xticks(sorted(xvals))
                ax.set_xticklabels([fmt_cell(x, v) for v in sorted(xvals)], fontsize=8)
        else:
            ax.set_xticks(range(len(xvals)))
            ax.set_xticklabels([str(v) for v in xvals], fontsize=8, rotation=15 if len(xvals) > 4 else 0)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel(x)
    if len(keys) > 1 or (keys and keys[0]):
        axes[0].legend(fontsize=7.5, loc="best", ncol=2 if len(keys) > 6 else 1)
    title = w.doc.description or f"{os.path.basename(w.file)}"
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    notes = []
    if any_nofit:
        notes.append("red circles: does not fit in device memory")
    if dropped:
        notes.append(f"{dropped} more series not drawn (narrow the sweep or use --where)")
    n_err = sum(1 for c in cases if c.error)
    if n_err:
        notes.append(f"{n_err} impossible cases skipped")
    if notes:
        fig.text(0.01, 0.005, "; ".join(notes), fontsize=7.5, color="#444444")
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    save(fig, path)


def _numeric_axis(w) -> str | None:
    """The first swept key whose values are all numbers (a better x axis than names)."""
    for ax in w.axes:
        for k in ax.keys:
            vals = [ch[k] for ch in ax.choices]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) and len(vals) > 1:
                return k
    return None


def _zipped_with(w, a: str, b: str) -> bool:
    return any(a in ax.keys and b in ax.keys for ax in w.axes if len(ax.keys) > 1)
