"""Commands next to `estimate`: compare, roofline, plot, import, schema."""
from __future__ import annotations

import json
import os

import click

from .cli import FORMATS, collect_workload, guarded, main, parse_sets, workload_options, write_output
from .errors import CostModelError, suggest


def _split(values) -> list[str]:
    out = []
    for v in values or ():
        out += [x.strip() for x in str(v).split(",") if x.strip()]
    return out


# --- compare -----------------------------------------------------------------------
TRAIN_ROWS = ("params", "step_flops", "total_memory_bytes", "fits", "max_batch", "step_time_s", "mfu",
              "tokens_per_s", "samples_per_s", "arithmetic_intensity", "bound")
RUN_ROWS = ("train_time_s", "device_hours", "cost_usd", "energy_kwh")
INFER_ROWS = ("params", "forward_flops", "kv_cache_bytes", "total_memory_bytes", "fits", "max_batch",
              "forward_time_s", "decode_time_per_token_s", "tokens_per_s", "samples_per_s", "bound")


def _kind_of(name: str, models_dir, hardware_dir) -> str:
    from .catalog import _is_path, hardware_names, model_names
    if name in model_names(models_dir):
        return "model"
    if name in hardware_names(hardware_dir):
        return "hardware"
    if _is_path(name):
        if not os.path.exists(name):
            raise CostModelError("no such file", file=name)
        if name.endswith(".json"):
            return "model"
        from .yamlio import load_file
        data = load_file(name).data
        if isinstance(data, dict) and "arch" in data:
            return "model"
        if isinstance(data, dict) and ("peak" in data or "memory" in data):
            return "hardware"
        raise CostModelError("neither a model spec (no 'arch' field) nor a hardware spec (no 'peak' field)", file=name)
    known = list(model_names(models_dir)) + list(hardware_names(hardware_dir))
    raise CostModelError(f"unknown model or device {name!r}{suggest(name, known)} "
                         "(see `costmodel models` and `costmodel hardware`)")


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--hardware", "-H", "hardware", multiple=True,
              help="device(s) to run on: repeat or comma-separate [a100-80gb]")
@click.option("--model", "models_opt", multiple=True, help="model(s): repeat or comma-separate")
@click.option("--models-dir", multiple=True, type=click.Path(file_okay=False), help="extra model YAML folder")
@click.option("--hardware-dir", multiple=True, type=click.Path(file_okay=False), help="extra hardware YAML folder")
@workload_options
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="override any field (as for estimate)")
@click.option("--columns", "columns", help="comma-separated report values to show (default: a summary)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write to a file instead of stdout")
@guarded
def compare(names, hardware, models_opt, models_dir, hardware_dir, sets, columns, fmt, output, **kw):
    """Put models or devices side by side.

    NAMES are models and/or devices (names or YAML/config.json paths);
    every model runs on every device:

        costmodel compare gpt2 bert-base t5-base --batch 8

        costmodel compare a100-80gb h100-sxm tpu-v4 --model llama-2-7b --mode inference

    Table and Markdown put one case per column; JSON and CSV give one row per case.
    """
    from . import whatif as wi
    wl = collect_workload(kw)
    models, hws = _split(models_opt), _split(hardware)
    for n in names:
        (models if _kind_of(n, models_dir, hardware_dir) == "model" else hws).append(n)
    if not models:
        raise CostModelError("compare needs at least one model (a name, a YAML or a config.json; "
                             "e.g. `costmodel compare a100-80gb h100-sxm --model gpt2`)")
    hws = hws or ["a100-80gb"]
    data = {"model": models[0], "hardware": hws[0], "workload": wl,
            "sweep": {k: v for k, v in (("model", models), ("hardware", hws)) if len(v) > 1}}
    w = wi.from_dict(data, file="<compare>", cli_overrides=parse_sets(sets), models_dir=models_dir,
                     hardware_dir=hardware_dir)
    cases = wi.evaluate(w)
    ok = [c for c in cases if c.report is not None]
    if columns:
        rows = _split([columns])
    else:
        train = any(c.report.workload.get("mode") == "train" for c in ok) if ok else True
        rows = list(TRAIN_ROWS if train else INFER_ROWS)
        if train and any(c.report.values.get("train_time_s") for c in ok):
            rows += RUN_ROWS
        rows = [r for r in rows if any(wi.lookup(c, r) not in (wi._MISSING, None) for c in ok)] or rows
    labels = ["model", "hardware"]
    if len({c.report.workload.get("precision") for c in ok}) > 1 and "precision" not in rows:
        rows.insert(0, "precision")       # devices without bf16 fall back to fp32
    if fmt in ("json", "csv"):
        t = wi.tabulate(w, cases, columns=labels + rows + (["error"] if any(c.error for c in cases) else []))
        t.title = "compare"
        write_output(wi.render(t, fmt), output)
        return
    wi._check_columns(rows, cases, w, "--columns")
    heads = [_case_label(c, len(models) > 1, len(hws) > 1) for c in cases]
    table_rows = []
    for r in rows:
        table_rows.append([r] + [wi.fmt_cell(r, None if (v := wi.lookup(c, r)) is wi._MISSING else v)
                                 for c in cases])
    if all(c.report is not None for c in cases) and len(cases) > 1 and "step_time_s" in rows:
        t0 = cases[0].report.values.get("step_time_s")
        table_rows.append(["speed vs first"] + [f"{t0 / c.report.values['step_time_s']:.2f}x"
                                                if c.report.values.get("step_time_s") else "-" for c in cases])
    if any(c.error for c in cases):
        table_rows.append(["error"] + [c.error or "" for c in cases])
    rep0 = ok[0].report if ok else None
    title = "compare" + (f": {_scenario(rep0)}" if rep0 else "")
    if fmt == "markdown":
        lines = [f"**{title}**", "", "| quantity | " + " | ".join(heads) + " |",
                 "|---|" + "---:|" * len(heads)]
        lines += ["| " + " | ".join(x.replace("|", "\\|") for x in r) + " |" for r in table_rows]
        write_output("\n".join(lines) + "\n", output)
        return
    import io
    import shutil
    from rich.console import Console
    from rich.table import Table
    t = Table(title=title, title_justify="left")
    t.add_column("quantity", style="bold")
    for h in heads:
        t.add_column(h, justify="right", overflow="fold")
    for r in table_rows:
        t.add_row(*r)
    if output:
        con = Console(record=True, width=200, file=io.StringIO(), color_system=None)
        con.print(t)
        write_output("\n".join(x.rstrip() for x in con.export_text().splitlines()) + "\n", output)
    else:
        con = Console()
        if not con.is_terminal:
            con = Console(width=max(120, shutil.get_terminal_size((160, 24)).columns))
        con.print(t)


def _case_label(c, many_models: bool, many_hw: bool) -> str:
    m = c.report.model if c.report is not None else str(c.assign.get("model", ""))
    h = c.report.hardware if c.report is not None else str(c.assign.get("hardware", ""))
    if many_models and many_hw:
        return f"{m} @ {h}"
    return m if many_models or not many_hw else h


def _scenario(rep) -> str:
    from .render import _title
    t = _title(rep)
    return t.split(": ", 1)[1] if ": " in t else t


# --- roofline ----------------------------------------------------------------------
@main.command()
@click.argument("model")
@click.option("--hardware", "-H", "hardware", default="a100-80gb", show_default=True, help="device name or YAML path")
@click.option("--models-dir", multiple=True, type=click.Path(file_okay=False), help="extra model YAML folder")
@click.option("--hardware-dir", multiple=True, type=click.Path(file_okay=False), help="extra hardware YAML folder")
@workload_options
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="override any field (as for estimate)")
@click.option("--top", type=click.IntRange(0, 50), default=10, show_default=True, help="label the N slowest ops")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="roofline.png", show_default=True,
              help="image file (.png, .svg or .pdf)")
@guarded
def roofline(model, hardware, models_dir, hardware_dir, sets, top, output, **kw):
    """Draw the device roofline with every op of MODEL on it.

    One ceiling per dtype (log-log), the HBM slope, and each op at its
    arithmetic intensity and attained FLOP/s, sized by its share of time.
    """
    from .plot import _mpl, roofline_figure
    _mpl()                      # fail fast, before any work, when matplotlib is missing
    from .catalog import load_hardware
    from .engine import _apply_overrides, estimate, split_overrides
    wl = collect_workload(kw)
    overrides = parse_sets(sets)
    rep = estimate(model, hardware, wl, overrides=overrides, models_dir=models_dir, hardware_dir=hardware_dir)
    hw = _apply_overrides(load_hardware(hardware, hardware_dir), split_overrides(overrides)[1], "hardware.")
    pts = roofline_figure(rep, hw, output, top=top)
    mem = sum(1 for p in pts if p["bound"] == "memory")
    click.echo(f"wrote {output}: {len(pts)} ops ({mem} memory-bound) on the {hw.display_name} roofline", err=True)


# --- plot --------------------------------------------------------------------------
@main.command("plot")
@click.option("--file", "-f", "whatif", required=True, type=click.Path(dir_okay=False), help="what-if YAML file")
@click.option("--x", "x", help="swept key on the x axis [the first swept key]")
@click.option("--y", "ys", multiple=True, help="column(s) to plot: repeat or comma-separate "
                                               "[step_time_s, total_memory_bytes, cost_usd]")
@click.option("--where", "filters", multiple=True, help="keep cases, e.g. fits=true")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="override any field of the base scenario")
@click.option("--models-dir", multiple=True, type=click.Path(file_okay=False), help="extra model YAML folder")
@click.option("--hardware-dir", multiple=True, type=click.Path(file_okay=False), help="extra hardware YAML folder")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="sweep.png", show_default=True,
              help="image file (.png, .svg or .pdf)")
@guarded
def plot_cmd(whatif, x, ys, filters, sets, models_dir, hardware_dir, output):
    """Plot time, memory or cost of a what-if sweep against the swept field."""
    from .plot import _mpl, sweep_figure
    _mpl()
    from . import whatif as wi
    w = wi.load_whatif(whatif, cli_overrides=parse_sets(sets), models_dir=models_dir, hardware_dir=hardware_dir,
                       filters=filters)
    ys = _split(ys) or (w.doc.plot.y if w.doc.plot and w.doc.plot.y else None)
    keep = wi.needed_columns(w, extra=list(ys or ()) + ["fits", "memory_capacity_bytes", "cost_usd",
                                                         "decode_time_per_token_s"])
    cases = wi.evaluate(w, progress=True, keep=keep)
    sweep_figure(w, cases, output, x=x, ys=ys)
    click.echo(f"wrote {output}: {len(cases)} cases", err=True)


# --- import ------------------------------------------------------------------------
@main.group("import")
def import_group():
    """Bring your own model: convert a foreign config into a model YAML."""


@import_group.command("hf")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write the model YAML here")
@guarded
def import_hf(config, output):
    """Turn a Hugging Face config.json into a model YAML (exact parameter count).

    Families: BERT, RoBERTa, DistilBERT, GPT-2, GPT-NeoX, Llama, Mistral,
    Qwen2, T5, BART, ViT. `costmodel estimate path/to/config.json` also works
    directly.
    """
    from .hf import to_yaml
    if not os.path.exists(config):
        raise CostModelError("no such file", file=config)
    text = to_yaml(config)
    write_output(text, output)
    if output:
        click.echo(f"wrote {output}", err=True)


# --- schema ------------------------------------------------------------------------
def schemas() -> dict:
    from pydantic import TypeAdapter
    from .specs.hardware import Hardware
    from .specs.model import ModelSpec
    from .whatif import WhatIfFile
    out = {
        "model": TypeAdapter(ModelSpec).json_schema(by_alias=True),
        "hardware": Hardware.model_json_schema(),
        "whatif": WhatIfFile.model_json_schema(),
    }
    titles = {"model": "costmodel model spec (models/*.yaml)", "hardware": "costmodel hardware spec (hardware/*.yaml)",
              "whatif": "costmodel what-if file (costmodel estimate -f)"}
    for k, s in out.items():
        s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        s["title"] = titles[k]
    return out


@main.command()
@click.option("--output", "-o", "out_dir", type=click.Path(file_okay=False),
              help="folder to write model.schema.json, hardware.schema.json, whatif.schema.json")
@guarded
def schema(out_dir):
    """JSON Schemas of model, hardware and what-if files (for editors and CI)."""
    s = schemas()
    if not out_dir:
        write_output(json.dumps(s, indent=2) + "\n", None)
        return
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise CostModelError(f"cannot create folder {out_dir!r} ({e.strerror})", field="--output") from None
    for k, v in s.items():
        write_output(json.dumps(v, indent=2) + "\n", os.path.join(out_dir, f"{k}.schema.json"))
    click.echo(f"wrote {', '.join(f'{k}.schema.json' for k in s)} to {out_dir}", err=True)
