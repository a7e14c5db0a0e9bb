"""`costmodel plan`: which parallel layouts fit, and the time-cost Pareto front."""
from __future__ import annotations

import json

import click

from .cli import guarded, main, parse_sets, write_output
from .errors import CostModelError


@main.command("plan")
@click.argument("model")
@click.option("--hardware", "-H", "hardware", default="a100-80gb", show_default=True, help="device name or YAML path")
@click.option("--tokens", type=float, help="train on this many tokens")
@click.option("--steps", type=int, help="... or this many optimizer steps")
@click.option("--gpus-max", type=int, default=512, show_default=True, help="largest device count to consider")
@click.option("--gpus-min", type=int, default=1, show_default=True, help="smallest device count to consider")
@click.option("--budget", type=float, help="keep layouts costing at most this many USD")
@click.option("--deadline", type=float, help="keep layouts finishing within this many days")
@click.option("--batch", "-b", type=int, help="global batch in sequences/images [2^20 tokens, or 256 images]")
@click.option("--seq", "-s", type=int, help="sequence length [model default]")
@click.option("--precision", "-p", type=click.Choice(["fp32", "tf32", "fp16", "bf16", "fp8"]))
@click.option("--optimizer", default="adamw", show_default=True)
@click.option("--flash/--no-flash", default=None, help="fix flash attention on/off [search both]")
@click.option("--price", type=float, help="USD per device-hour (overrides the hardware's)")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE",
              help="override a model/hardware/workload field, e.g. hardware.efficiency.matmul=0.6")
@click.option("--models-dir", multiple=True, type=click.Path(file_okay=False))
@click.option("--hardware-dir", multiple=True, type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False))
@guarded
def plan_cmd(model, hardware, tokens, steps, gpus_max, gpus_min, budget, deadline, batch, seq, precision, optimizer,
             flash, price, sets, models_dir, hardware_dir, fmt, output):
    """Search dp / tp / pp / ZeRO / micro-batch / recompute / flash layouts of
    MODEL that fit in memory and print the Pareto front of time vs cost.

    The global batch stays fixed (it is a training hyper-parameter, not a
    systems choice); the run length is --tokens or --steps.
    """
    from .workload import OPTIMIZERS
    if optimizer not in OPTIMIZERS:
        from .errors import suggest
        raise CostModelError(f"unknown optimizer {optimizer!r}{suggest(optimizer, OPTIMIZERS)} "
                             f"(expected one of: {', '.join(OPTIMIZERS)})", field="--optimizer")
    for name, v in (("--budget", budget), ("--deadline", deadline), ("--price", price), ("--tokens", tokens)):
        if v is not None and not v > 0:
            raise CostModelError(f"{name} must be > 0 (got {v})", field=name)
    for name, v in (("--batch", batch), ("--seq", seq), ("--steps", steps)):
        if v is not None and v < 1:
            raise CostModelError(f"{name} must be >= 1 (got {v})", field=name)
    from .plan import plan, to_json_dict
    res = plan(model, hardware, tokens, gpus_max=gpus_max, gpus_min=gpus_min, budget=budget,
               deadline_days=deadline, batch=batch, seq=seq, precision=precision, optimizer=optimizer, flash=flash,
               price=price, steps=steps, overrides=parse_sets(sets), models_dir=models_dir,
               hardware_dir=hardware_dir)
    if fmt == "json":
        write_output(json.dumps(to_json_dict(res), indent=2), output)
        return
    text = render_table(res, to_file=output is not None)
    if output:
        write_output(text, output)


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def render_table(res: dict, to_file: bool = False) -> str:
    import os
    from rich.console import Console
    from rich.table import Table
    from .units import fmt_bytes, fmt_time
    import sys
    if to_file:
        con = Console(record=True, width=160, file=open(os.devnull, "w"))
    else:   # a pipe gets the full table, a terminal its own width
        con = Console() if sys.stdout.isatty() else Console(width=160)
    s = res["stats"]
    title = (f"{res['model']} on {res['hardware']}: {res['steps']:,} steps of batch {res['batch']} "
             f"({res['batch_source']})" + (f" x seq {res['seq']}" if res["seq"] else "")
             + f", {res['precision']}, {res['optimizer']}, up to {res['gpus_max']} devices")
    t = Table(title=title, title_justify="left",
              caption=f"Pareto front of wall time vs cost (fastest first). Searched {s['families']:,} "
                      f"(tp, pp, dp, micro-batch, flash) families: {s['bounded_out']:,} bounded out, "
                      f"{s['memory_out']:,} did not fit, {s['evaluated']:,} layouts timed, {s['fits']:,} fit; "
                      f"{s['elapsed_s']:.2f} s. Sequence parallel whenever tp > 1.",
              caption_justify="left")
    cap = res["front"][0].memory_capacity_bytes if res["front"] else None
    cols = ("devices", "dp·tp·pp", "ZeRO", "mb×acc", "recomp", "flash", "mem/dev", "step", "wall", "dev-h", "cost",
            "MFU")
    for c in cols:
        t.add_column(c, justify="left" if c in ("recomp", "flash", "dp·tp·pp") else "right", no_wrap=True)
    for x in res["front"]:
        t.add_row(str(x.gpus), f"{x.dp}·{x.tp}·{x.pp}", str(x.zero), f"{x.micro_batch}×{x.grad_accum}",
                  x.recompute, "yes" if x.flash else "no", fmt_bytes(x.memory_bytes),
                  fmt_time(x.step_time_s), fmt_time(x.train_time_s), _num(x.device_hours),
                  ("$" + _num(x.cost_usd)) if x.cost_usd is not None else "-", f"{x.mfu:.1%}")
    if cap:
        t.title += f"; memory per device {fmt_bytes(cap)} ({fmt_bytes(cap, True)})"
    con.print(t)
    st = res["stats"]
    if not res["front"] and res["budget_usd"] and st.get("min_cost_lower_bound_usd", 0) > res["budget_usd"]:
        con.print(f"verdict: no layout fits the budget: --budget ${res['budget_usd']:.4g} is below the cheapest "
                  f"possible run (at least ${st['min_cost_lower_bound_usd']:,.2f} at the ideal roofline)")
    elif not res["front"] and res["deadline_days"] and st.get("min_time_lower_bound_s", 0) > res["deadline_days"] * 86400:
        con.print(f"verdict: no layout meets the deadline: --deadline {res['deadline_days']:g} days is shorter than "
                  f"the fastest possible run (at least {st['min_time_lower_bound_s'] / 86400:.3g} days)")
    elif not res["front"]:
        why = []
        if res["budget_usd"]:
            why.append(f"--budget {res['budget_usd']:,.0f}")
        if res["deadline_days"]:
            why.append(f"--deadline {res['deadline_days']:g} days")
        con.print(f"no layout fits in memory{' within ' + ' and '.join(why) if why else ''} on up to "
                  f"{res['gpus_max']} devices; try a larger --gpus-max, a smaller --batch or another device")
    if res["price_usd_per_device_hour"] is None:
        con.print("no price for this device: cost column empty (give --price USD per device-hour)")
    return con.export_text() if to_file else ""
