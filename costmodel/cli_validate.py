"""`costmodel validate` and `costmodel measure`: the engine against PyTorch.

* ``costmodel validate --exact [MODEL...]``: parameters, matmul FLOPs and
  saved-for-backward bytes of each model spec against its torch build, on the
  CPU (or the meta device for huge ones); reference parameter counts of the
  real transformers / torchvision implementation where installed.
* ``costmodel measure [--quick]``: time single ops and whole training /
  inference steps with torch, write validation/<device>/<date>.json.
* ``costmodel validate [DATA.json...] [--calibrate]``: predicted vs measured
  time and memory per scenario, median / max error per category; with
  ``--calibrate``, fit efficiency curves to the single-op rows, judge them on
  the whole-step rows, and write them into the hardware YAML.

torch is needed by --exact and measure only (``pip install 'costmodel[validate]'``).
"""
from __future__ import annotations

import json
import os

import click

from .cli import console, guarded, main, parse_sets, write_output
from .errors import CostModelError
from .units import fmt_bytes, fmt_time, si


def _need_torch(what: str):
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        raise CostModelError(f"{what} needs torch (pip install 'costmodel[validate]')")


def _pct(x):
    return "-" if x is None else f"{x:+.1%}"


@main.command("validate")
@click.argument("args", nargs=-1)
@click.option("--exact", is_flag=True, help="check models against their torch build (ARGS: model names; default all)")
@click.option("--batch", "-b", type=int, help="--exact: batch [per-model small shape]")
@click.option("--seq", "-s", type=int, help="--exact: sequence length")
@click.option("--image", type=int, help="--exact: image size")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="--exact: model override, e.g. model.layers=1")
@click.option("--device", type=click.Choice(["auto", "cpu", "meta"]), default="auto", show_default=True,
              help="--exact: where to run torch (auto: meta for models too big for the CPU)")
@click.option("--by-kind/--no-by-kind", default=None, help="--exact: saved bytes per op kind [on for <= 3 models]")
@click.option("--reference/--no-reference", default=True, show_default=True,
              help="--exact: also count parameters of the real transformers/torchvision model (meta device)")
@click.option("--hardware", "-H", help="hardware name or YAML describing the measured device [from the data]")
@click.option("--hardware-dir", multiple=True, type=click.Path(file_okay=False))
@click.option("--calibrate", is_flag=True, help="fit efficiency curves to the single-op rows and write them into the hardware YAML")
@click.option("--write/--no-write", default=True, show_default=True, help="--calibrate: write the hardware YAML")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write to a file instead of stdout")
@guarded
def validate_cmd(args, exact, batch, seq, image, sets, device, by_kind, reference, hardware, hardware_dir,
                 calibrate, write, fmt, output):
    """Validate the engine against PyTorch.

    Without --exact: ARGS are measurement JSON files from `costmodel measure`
    (default: the newest per device under ./validation); prints predicted vs
    measured time and memory for every scenario.
    """
    if exact:
        if calibrate:
            raise CostModelError("--calibrate works on measurement data, not with --exact")
        _need_torch("costmodel validate --exact")
        return _exact(args, batch, seq, image, parse_sets(sets), device, by_kind, reference, fmt, output)
    if sets or batch or seq or image:
        raise CostModelError("--batch/--seq/--image/--set apply to --exact (measurement rows carry their own shapes)")
    from .validate import compare as C
    paths = list(args) or C.default_data()
    if not paths:
        raise CostModelError("no measurement data (expected JSON paths, or validation/<device>/*.json; "
                             "record some with `costmodel measure`)")
    outs = []
    for path in paths:
        doc = C.load_data(path)
        hw = C.hardware_for(doc, hardware, hardware_dir)
        before = C.compare(doc, hw, path)
        result = {"before": before}
        if calibrate:
            result.update(_calibrate(doc, hw, path, write, hardware_dir, hardware))
        outs.append(result)
    if fmt == "json":
        js = []
        for r in outs:
            d = (r.get("after") or r["before"]).to_dict()
            if "after" in r:
                d["uncalibrated"] = {k: v for k, v in r["uncalibrated"].to_dict().items() if k != "rows"}
                d["calibration"] = r["calibration"]
            js.append(d)
        write_output(json.dumps(js[0] if len(js) == 1 else js, indent=2, default=float), output)
        return
    from rich.console import Console
    con = Console(record=True, width=150, file=open(os.devnull, "w")) if output else console()
    for r in outs:
        _print_comparison(con, r.get("after") or r["before"], r.get("uncalibrated"))
        if "after" in r:
            con.print(r["calibration_text"])
    if output:
        write_output(con.export_text(), output)


def _calibrate(doc, hw, path, write, hardware_dir, hardware=None) -> dict:
    from .catalog import hardware_names
    from .validate import calibrate as K
    from .validate import compare as C
    singles = [r for r in doc["rows"] if r.get("category") == "single_op" and r.get("time_s")]
    src = f"costmodel validate --calibrate {path} ({len(singles)} single-op rows; whole-step rows held out)"
    run_hw = C.as_run(doc, hw.model_copy(update={"calibration": None}))
    fitted_run = K.round_calibration(K.fit(singles, run_hw, source=src, date=doc.get("date", "")))
    fitted = hw.model_copy(update={"calibration": fitted_run.calibration})
    after = C.compare(doc, fitted, path)
    raw = C.compare(doc, hw.model_copy(update={"calibration": None}), path)
    # the YAML the hardware came from: --hardware (name or path), else the data's hardware name
    target = None
    ref = hardware or doc.get("hardware")
    names = hardware_names(hardware_dir)
    if ref and os.path.isfile(ref):
        target = ref
    elif ref in names:
        target = str(names[ref])
    text = K.calibration_yaml(fitted.calibration)
    wrote = None
    if write and target:
        K.write_calibration(target, fitted.calibration)
        wrote = target
    msg = (f"\ncalibration fitted on {len(singles)} single-op rows, judged on the whole-step rows "
           f"(hold-out)\n{text}" + (f"written into {wrote}\n" if wrote else
                                    ("not written (--no-write)\n" if not write else "no hardware YAML file to write\n")))
    return {"after": after, "uncalibrated": raw, "calibration": fitted.calibration.model_dump(),
            "calibration_text": msg, "written": wrote}


def _print_comparison(con, cmp, before=None):
    from rich.table import Table
    t = Table(title=f"{cmp.device} -- predicted ({cmp.hardware}{', calibrated' if cmp.calibrated else ''}) "
                    f"vs measured: {cmp.data}", title_justify="left")
    for c in ("scenario", "category", "measured time", "predicted", "error", "measured peak mem", "predicted",
              "error", "note"):
        t.add_column(c, justify="left" if c in ("scenario", "category", "note") else "right")
    for r in cmp.rows:
        t.add_row(r.id, r.category, fmt_time(r.measured_time) if r.measured_time else "-",
                  fmt_time(r.predicted_time) if r.predicted_time is not None else "-", _pct(r.time_error),
                  fmt_bytes(r.measured_memory) if r.measured_memory else "-",
                  fmt_bytes(r.predicted_memory) if r.predicted_memory is not None else "-", _pct(r.memory_error),
                  r.note)
    con.print(t)
    s = Table(title="|error| per category (error = (predicted - measured) / measured)", title_justify="left")
    for c in ("category", "rows", "median time error", "max time error", "median memory error", "max memory error"):
        s.add_column(c, justify="left" if c == "category" else "right")
    for cat, st in cmp.summary().items():
        s.add_row(cat, str(st["n"]), _pct(st["median_time_error"]).lstrip("+"), _pct(st["max_time_error"]).lstrip("+"),
                  _pct(st["median_memory_error"]).lstrip("+"), _pct(st["max_memory_error"]).lstrip("+"))
    if before is not None:
        b = before.summary()["whole_step"]
        s.add_row("whole_step (uncalibrated)", str(b["n"]), _pct(b["median_time_error"]).lstrip("+"),
                  _pct(b["max_time_error"]).lstrip("+"), _pct(b["median_memory_error"]).lstrip("+"),
                  _pct(b["max_memory_error"]).lstrip("+"))
    con.print(s)


def _exact(names, batch, seq, image, overrides, device, by_kind, reference, fmt, output):
    from .catalog import load_model, model_names
    from .validate.exact import check, small_case
    names = list(names) or list(model_names())
    specs = [(n, load_model(n)) for n in names]
    results, refs = [], {}
    from rich.progress import Progress
    prog = Progress(transient=True, disable=fmt == "json" or bool(output) or not console().is_terminal)
    with prog:
        task = prog.add_task("checking", total=len(specs))
        for n, spec in specs:
            prog.update(task, description=f"{n}")
            case = small_case(spec)
            ov = {**case["overrides"], **{k[6:] if k.startswith("model.") else k: v for k, v in overrides.items()}}
            dev = case["device"] if device == "auto" else device
            r = check(spec, batch=batch or case.get("batch", 1), seq=seq or case.get("seq"),
                      target_seq=case.get("target_seq") if not seq else None, image=image or case.get("image"),
                      overrides=ov or None, device=dev)
            results.append(r)
            if reference:
                from .validate.reference import reference_params
                refs[r.model] = reference_params(spec)
            prog.advance(task)
    if fmt == "json":
        out = []
        for r in results:
            d = r.to_dict()
            if r.model in refs:
                x = refs[r.model]
                d["reference"] = {"library": x.library, "class": x.cls, "params": x.params, "engine": x.engine,
                                  "ok": x.ok, "note": x.note}
            out.append(d)
        write_output(json.dumps(out, indent=2, default=float), output)
        if not all(r.ok for r in results) or any(x.ok is False for x in refs.values()):
            raise SystemExit(1)
        return
    from rich.console import Console
    from rich.table import Table
    con = Console(record=True, width=170, file=open(os.devnull, "w")) if output else console()
    t = Table(title="engine vs torch (train, fp32): '=' equal, else torch - engine", title_justify="left")
    for c in ("model", "device", "shape", "params", "fwd matmul FLOPs", "fwd+bwd", "saved (torch)", "saved (engine)",
              "known gap", "unexplained", "reference params", "ok"):
        t.add_column(c, justify="left" if c in ("model", "device", "shape", "reference params") else "right")

    def d(a, b):
        return "=" if a == b else f"{a - b:+,.0f}"
    for r in results:
        sh = ", ".join(f"{k}={v}" for k, v in r.shape.items() if v and k != "overrides")
        if r.shape.get("overrides"):
            sh += " " + ",".join(f"{k}={v}" for k, v in r.shape["overrides"].items())
        ref = refs.get(r.model)
        refs_txt = "-" if ref is None else (f"{ref.params:,} {'=' if ref.ok else '!='} ({ref.library})"
                                            if ref.params is not None else ref.note)
        t.add_row(r.model, r.device, sh, f"{r.params_torch:,} {d(r.params_torch, r.params_engine)}",
                  f"{si(r.fwd_flops_torch, 'FLOP')} {d(r.fwd_flops_torch, r.fwd_flops_engine)}",
                  f"{si(r.fwdbwd_flops_torch, 'FLOP')} {d(r.fwdbwd_flops_torch, r.fwdbwd_flops_engine)}"
                  + (" (counter bug, see below)" if r.counter_gap else ""),
                  fmt_bytes(r.saved_torch), fmt_bytes(r.saved_engine), fmt_bytes(r.explained) if r.explained else "0",
                  "-" if r.unexplained is None else ("0" if r.unexplained == 0 else f"{r.unexplained:+,.0f} B"),
                  refs_txt, "[green]yes[/]" if r.ok and (ref is None or ref.ok is not False) else "[red]NO[/]")
    con.print(t)
    show = by_kind if by_kind is not None else len(results) <= 3
    for r in results:
        if show:
            k = Table(title=f"{r.model}: bytes saved for backward per engine op kind", title_justify="left")
            for c in ("op kind", "engine", "known gap", "engine + gap", "torch (measured)", "unexplained"):
                k.add_column(c, justify="left" if c == "op kind" else "right")
            for row in r.by_kind():
                k.add_row(row["kind"], f"{row['engine']:,.0f}", f"{row['known_gap']:+,.0f}" if row["known_gap"] else "0",
                          f"{row['engine'] + row['known_gap']:,.0f}",
                          "-" if row["torch"] is None else f"{row['torch']:,.0f}",
                          "-" if row["unexplained"] is None else f"{row['unexplained']:+,.0f}")
            con.print(k)
        for g in r.gaps:
            con.print(f"  {r.model}: known gap {g.bytes:+,.0f} B ({g.kind}): {g.why}")
        for n in r.counter_notes:
            con.print(f"  {r.model}: flop counter: {n}")
    bad = [r.model for r in results if not r.ok] + [m for m, x in refs.items() if x.ok is False]
    con.print(f"{len(results) - len(set(bad))}/{len(results)} models exact (bytes in B = bytes; FLOPs = 2 per "
              f"multiply-accumulate; saved = unique storages autograd keeps, parameters and buffers excluded)")
    if output:
        write_output(con.export_text(), output)
    if bad:
        raise CostModelError(f"mismatch: {', '.join(sorted(set(bad)))}")


@main.command("measure")
@click.option("--quick", is_flag=True, help="small shapes, fp32: a few minutes on a CPU")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", "dtypes", multiple=True, type=click.Choice(["fp32", "bf16", "fp16"]),
              help="[fp32 on the CPU; fp32 and bf16 on a GPU]")
@click.option("--model", "models", multiple=True, help="only these models' whole-step scenarios")
@click.option("--singles/--no-singles", default=True, show_default=True, help="single-op scenarios")
@click.option("--steps/--no-steps", default=True, show_default=True, help="whole-step scenarios")
@click.option("--budget-s", type=float, help="stop starting scenarios after this many seconds [450; --quick 600]")
@click.option("--warmup", type=int, help="untimed calls first [3; --quick 1]")
@click.option("--iters", type=int, help="timed calls [10; --quick 3; single ops at least 10]")
@click.option("--hardware", "-H", help="hardware YAML name describing this device [cpu-host on a CPU; matched by name on a GPU]")
@click.option("--out", "out_dir", default="validation", show_default=True, type=click.Path(file_okay=False))
@click.option("--threads", type=int, help="torch CPU threads [1 on the CPU: timed by thread CPU time, robust on a "
                                           "shared host; more threads are timed by wall clock]")
@guarded
def measure_cmd(quick, device, dtypes, models, singles, steps, budget_s, warmup, iters, hardware, out_dir, threads):
    """Time single ops and whole training / inference steps with torch;
    record validation/<device>/<date>.json for `costmodel validate`."""
    _need_torch("costmodel measure")
    import sys
    import torch
    from .catalog import model_names
    known = model_names()
    for m in models:
        if m not in known:
            from .errors import suggest
            raise CostModelError(f"unknown model {m!r}{suggest(m, known)}", field="--model")
    for name, v in (("--warmup", warmup), ("--iters", iters), ("--threads", threads)):
        if v is not None and v < (0 if name == "--warmup" else 1):
            raise CostModelError(f"{name} {v} (expected >= {0 if name == '--warmup' else 1})", field=name)
    from .validate.measure import pick_device
    if pick_device(device) == "cpu" or threads:
        torch.set_num_threads(threads or 1)
    from .validate.measure import run
    path, doc = run(quick=quick, device=device, dtypes=list(dtypes) or None, out_dir=out_dir,
                    models=list(models) or None, singles=singles, steps=steps, budget_s=budget_s, warmup=warmup,
                    iters=iters, hardware=hardware, command=" ".join(["costmodel"] + sys.argv[1:]))
    n_ok = sum(1 for r in doc["rows"] if "time_s" in r)
    bad = [r for r in doc["rows"] if "error" in r]
    click.echo(f"wrote {path}: {n_ok}/{len(doc['rows'])} scenarios measured on {doc['device']['name']} "
               f"in {doc['settings']['wall_s']} s" + (f"; {len(bad)} failed (see their \"error\")" if bad else ""))
