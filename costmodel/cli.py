"""`costmodel` command line: a thin shell over the Python API."""
from __future__ import annotations

import functools
import os
import sys
import tempfile

import click

from .errors import CostModelError

FORMATS = ("table", "json", "csv", "markdown")


def _fail(msg: str):
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def guarded(fn):
    """Every user error ends as one line on stderr and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*a, **k):
        try:
            return fn(*a, **k)
        except CostModelError as e:
            _fail(e.render())
        except RecursionError:
            _fail("input nested too deeply")
        except MemoryError:
            _fail("input too large")
        except Exception as e:  # pydantic and friends: still one line, never a traceback
            from pydantic import ValidationError
            if isinstance(e, ValidationError):
                from .errors import loc_path, pydantic_message
                err = e.errors()[0]
                _fail(f"{loc_path(err['loc']) or 'input'}: {pydantic_message(err)}")
            if os.environ.get("COSTMODEL_DEBUG"):
                raise
            _fail(f"{type(e).__name__}: {e} (set COSTMODEL_DEBUG=1 for a traceback; please report this)")
    return wrapper


def write_output(text: str, path: str | None):
    """Print, or write atomically (temp file + rename): never half-written."""
    if not path or path == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    d = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".costmodel-", suffix=".tmp")
    except OSError as e:
        raise CostModelError(f"cannot write {path!r} ({e.strerror}) (expected a writable folder)",
                             field="--output") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)        # mkstemp makes 0600; an output file is an ordinary file
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CostModelError(f"cannot write {path!r} ({e.strerror})", field="--output") from None
        raise


def console():
    """A rich console; wide when output is not a terminal (pipes, files, tests)."""
    from rich.console import Console
    c = Console()
    return c if c.is_terminal else Console(width=160)


def parse_sets(sets: tuple[str, ...]) -> dict:
    """--set PATH=VALUE pairs -> {path: value}. VALUE is read as YAML with the
    same bounds as spec files (no tags, no alias bombs, finite numbers); text
    that is not valid YAML stays a plain string."""
    from .errors import clip
    from .yamlio import loads
    out = {}
    for s in sets:
        if "=" not in s:
            raise CostModelError(f"{clip(repr(s))}: missing '=' (expected PATH=VALUE, e.g. "
                                 f"hardware.memory.bandwidth=1.5e12)", field="--set")
        k, v = s.split("=", 1)
        k = k.strip()
        if not k or any(not part.strip() for part in k.replace("[", ".[").split(".")):
            raise CostModelError(f"{clip(repr(s))}: empty field name in PATH (expected e.g. model.layers=48)",
                                 field="--set")
        if not v.strip():
            out[k] = ""
            continue
        try:
            val = loads(v, file="--set").data
        except CostModelError as e:
            if not e.message.startswith("invalid YAML"):
                raise CostModelError(e.message, field=f"--set {k}") from None
            val = v
        out[k] = val
    return out


class _OneLineErrors(click.Group):
    """click's own usage errors (a mistyped flag, 'abc' for --batch, a bad
    choice) as the same one line as every other error: 'error: ...', exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":      # bare `costmodel`: the help text, as click does
                e.show()
                sys.exit(e.exit_code)
            cmd = e.ctx.command_path if e.ctx is not None else "costmodel"
            _fail(f"{' '.join(e.format_message().split())} (see `{cmd} --help`)")
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__import__("costmodel").__version__, prog_name="costmodel")
def main():
    """costmodel: what will this model cost on this hardware?

    FLOPs, memory, time and money from first principles (roofline per op).
    """


_common = [
    click.option("--hardware", "-H", "hardware", default=None, help="device name or YAML path [a100-80gb]"),
    click.option("--models-dir", multiple=True, type=click.Path(file_okay=False), help="extra model YAML folder"),
    click.option("--hardware-dir", multiple=True, type=click.Path(file_okay=False), help="extra hardware YAML folder"),
]


def common(fn):
    for o in reversed(_common):
        fn = o(fn)
    return fn


def workload_options(fn):
    opts = [
        click.option("--batch", "-b", type=int, help="global batch (sequences/images per optimizer step) [1]"),
        click.option("--micro-batch", type=int, help="per device per forward [batch/dp]"),
        click.option("--seq", "-s", type=int, help="(encoder) sequence length [model default]"),
        click.option("--target-seq", type=int, help="decoder length of encoder-decoder models [seq]"),
        click.option("--image", type=int, help="image size in pixels [model default]"),
        click.option("--precision", "-p", type=click.Choice(["fp32", "tf32", "fp16", "bf16", "fp8"]),
                     help="compute precision [bf16, or fp32 where the device lacks bf16]"),
        click.option("--mode", "-m", type=click.Choice(["train", "inference"]), help="[train]"),
        click.option("--gen-tokens", type=int, help="inference: tokens generated [128]"),
        click.option("--gpus", type=int, help="devices in total"),
        click.option("--dp", type=int, help="data-parallel degree [gpus/(tp*pp)]"),
        click.option("--tp", type=int, help="tensor-parallel degree [1]"),
        click.option("--pp", type=int, help="pipeline-parallel degree [1]"),
        click.option("--zero", type=click.Choice(["0", "1", "2", "3"]), help="ZeRO stage [0]"),
        click.option("--sequence-parallel/--no-sequence-parallel", default=None),
        click.option("--recompute", type=click.Choice(["none", "selective", "full"]), help="[none]"),
        click.option("--flash/--no-flash", default=None, help="fused (Flash) attention [no]"),
        click.option("--optimizer", help="sgd, sgd-momentum, adam, adamw, lamb, adafactor, adam-8bit, lion [adamw]"),
        click.option("--tokens", type=float, help="train on this many tokens (whole-run time and cost)"),
        click.option("--steps", type=int, help="train for this many optimizer steps"),
        click.option("--epochs", type=float, help="epochs over --dataset-tokens"),
        click.option("--dataset-tokens", type=float),
        click.option("--price", type=float, help="USD per device-hour (overrides the hardware's)"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def collect_workload(kw: dict) -> dict:
    keys = ("batch", "micro_batch", "seq", "target_seq", "image", "precision", "mode", "gen_tokens", "gpus", "dp",
            "tp", "pp", "zero", "sequence_parallel", "recompute", "flash", "optimizer", "tokens", "steps", "epochs",
            "dataset_tokens", "price")
    w = {k: kw.pop(k) for k in keys if kw.get(k) is not None}
    for k in keys:
        kw.pop(k, None)
    if "zero" in w:
        w["zero"] = int(w["zero"])
    from pydantic import ValidationError
    from .errors import loc_path, pydantic_message
    from .workload import Workload
    try:                               # name the flag the user typed: --gpus 0 -> '--gpus: 0 is too small'
        Workload.model_validate({k: v for k, v in w.items() if k != "optimizer"})
    except ValidationError as e:
        err = e.errors()[0]
        raise CostModelError(pydantic_message(err),
                             field="--" + loc_path(err["loc"]).replace("_", "-")) from None
    if "optimizer" in w:
        from .workload import OPTIMIZERS
        if w["optimizer"] not in OPTIMIZERS:
            from .errors import suggest
            raise CostModelError(f"unknown optimizer {w['optimizer']!r}{suggest(w['optimizer'], OPTIMIZERS)} "
                                 f"(expected one of: {', '.join(OPTIMIZERS)})", field="--optimizer")
    return w


@main.command()
@click.argument("model", required=False)
@common
@workload_options
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE",
              help="override any field: model.layers=48, hardware.memory.bandwidth=1.5e12, batch=8")
@click.option("--file", "-f", "whatif", type=click.Path(dir_okay=False), help="what-if YAML file")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--detail", type=click.Choice(["model", "block", "op"]), default="block", show_default=True)
@click.option("--explain", is_flag=True, help="show each headline number as formula = inputs = value, with source")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write to a file instead of stdout")
@click.option("--sort", help="what-if: sort rows by this column")
@click.option("--where", "filters", multiple=True, help="what-if: keep rows, e.g. fits=true or 'step_time_s<1'")
@guarded
def estimate(model, hardware, models_dir, hardware_dir, sets, whatif, fmt, detail, explain, output, sort, filters,
             **kw):
    """Estimate FLOPs, memory, time and cost of MODEL on a device.

    MODEL is a built-in name (see `costmodel models`), a model YAML, or a
    Hugging Face config.json.
    """
    wl = collect_workload(kw)
    overrides = parse_sets(sets)
    if whatif:
        from .whatif import run_whatif
        text = run_whatif(whatif, fmt=fmt, cli_workload=wl, cli_overrides=overrides, model=model,
                          hardware=hardware, models_dir=models_dir, hardware_dir=hardware_dir, sort=sort,
                          filters=filters, progress=output is not None or fmt == "table")
        write_output(text, output)
        return
    if not model:
        raise CostModelError("missing MODEL (a built-in name, a YAML path or a config.json; see `costmodel models`)")
    from .engine import estimate as run
    from . import render
    rep = run(model, hardware or "a100-80gb", wl, overrides=overrides, models_dir=models_dir,
              hardware_dir=hardware_dir)
    if fmt == "table" and not output:
        render.print_table(rep, detail, explain=explain)
        return
    if fmt == "table":
        from rich.console import Console
        con = Console(record=True, width=140, file=open(os.devnull, "w"))
        render.print_table(rep, detail, console=con, explain=explain)
        text = con.export_text()
    elif fmt == "json":
        text = render.to_json(rep, detail)
    elif fmt == "csv":
        text = render.to_csv(rep, detail)
    else:
        text = render.to_markdown(rep, detail)
    write_output(text, output)


@main.command("models")
@click.option("--models-dir", multiple=True, type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@guarded
def models_cmd(models_dir, fmt):
    """List built-in models with their parameter counts."""
    from .catalog import load_model, model_names
    from .engine import count_params
    rows = []
    for name, path in model_names(models_dir).items():
        spec = load_model(str(path))
        rows.append({"name": name, "arch": spec.arch, "params": count_params(spec),
                     "reference": f"{spec.reference.library} {spec.reference.cls}" if spec.reference else "",
                     "description": spec.description})
    if fmt == "json":
        import json
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from .units import fmt_params
    t = Table(title="built-in models")
    for c in ("name", "arch", "params", "reference", "description"):
        t.add_column(c, justify="right" if c == "params" else "left", overflow="fold",
                     no_wrap=c in ("name", "params"))
    for r in rows:
        t.add_row(r["name"], r["arch"], fmt_params(r["params"]), r["reference"], r["description"])
    console().print(t)


@main.command("hardware")
@click.option("--hardware-dir", multiple=True, type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@guarded
def hardware_cmd(hardware_dir, fmt):
    """List built-in devices with their headline numbers."""
    from .catalog import hardware_names, load_hardware
    rows = []
    for name, path in hardware_names(hardware_dir).items():
        hw = load_hardware(str(path))
        dt = "bf16" if hw.peak.bf16 else "fp32"
        rows.append({"name": name, "device": hw.display_name, f"peak_flops": hw.peak_flops(dt), "peak_dtype": dt,
                     "fp32_flops": hw.peak_flops("fp32"), "memory_bytes": hw.memory.capacity_bytes,
                     "bandwidth": hw.memory.bandwidth, "ridge_point": hw.ridge_point(dt),
                     "usd_per_hour": hw.price.usd_per_hour if hw.price else None})
    if fmt == "json":
        import json
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from .units import fmt_bytes, si
    t = Table(title="built-in hardware (dense peaks)")
    for c in ("name", "device", "peak 16-bit", "peak fp32", "memory", "bandwidth", "ridge", "$/h"):
        t.add_column(c, justify="left" if c in ("name", "device") else "right", no_wrap=c != "device")
    for r in rows:
        t.add_row(r["name"], r["device"], si(r["peak_flops"], "FLOP/s") + f" {r['peak_dtype']}",
                  si(r["fp32_flops"], "FLOP/s") if r["fp32_flops"] else "-",
                  f"{fmt_bytes(r['memory_bytes'])} ({fmt_bytes(r['memory_bytes'], True)})",
                  si(r["bandwidth"], "B/s"), f"{r['ridge_point']:.0f} FLOP/B",
                  f"{r['usd_per_hour']:.2f}" if r["usd_per_hour"] else "-")
    console().print(t)


@main.command()
@click.argument("name")
@common
@guarded
def show(name, hardware, models_dir, hardware_dir):
    """Print one model or hardware spec and its derived totals."""
    import yaml
    from .catalog import hardware_names, load_hardware, load_model, model_names
    from .errors import clip, suggest
    is_path = name.endswith((".yaml", ".yml", ".json")) or os.sep in name
    if not is_path and name not in model_names(models_dir) and name not in hardware_names(hardware_dir):
        known = [*model_names(models_dir), *hardware_names(hardware_dir)]
        raise CostModelError(f"unknown model or hardware {clip(repr(name))}{suggest(name, known)} (expected a name "
                             f"from `costmodel models` or `costmodel hardware`, or a YAML path)")
    if name in model_names(models_dir) or (name.endswith((".yaml", ".yml", ".json")) and not name.startswith("hardware")):
        try:
            spec = load_model(name, models_dir)
        except CostModelError:
            if name in hardware_names(hardware_dir) or _looks_like_hardware(name):
                spec = None
            else:
                raise
        if spec is not None:
            from .engine import count_params
            click.echo(yaml.safe_dump(spec.model_dump(by_alias=True, exclude_none=True), sort_keys=False).rstrip())
            click.echo(f"# derived: params = {count_params(spec):,}")
            return
    hw = load_hardware(name, hardware_dir)
    click.echo(yaml.safe_dump(hw.model_dump(exclude_none=True), sort_keys=False).rstrip())
    for dt in hw.supported_dtypes():
        click.echo(f"# derived: ridge point {dt} = {hw.ridge_point(dt):.1f} FLOP/byte")


def _looks_like_hardware(path: str) -> bool:
    """A YAML mapping with a peak table and no arch: show it as a device, with the device's errors."""
    from .yamlio import load_file
    try:
        data = load_file(path).data
    except CostModelError:
        return False
    return isinstance(data, dict) and "arch" not in data and "peak" in data


# Commands that live in their own modules; each registers itself on `main`.
# Add a module name here when you add a command module (costmodel/cli_<name>.py).
EXTRA_COMMAND_MODULES = ("cli_book", "cli_validate", "cli_whatif", "cli_plan", "cli_extra")


def _register_optional():
    import importlib
    for m in EXTRA_COMMAND_MODULES:
        try:
            importlib.import_module(f"costmodel.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"costmodel.{m}":
                raise


_register_optional()


if __name__ == "__main__":  # pragma: no cover
    # `python -m costmodel.cli`: use the package's module so that the command
    # modules (which import costmodel.cli) register on the same group
    from costmodel.cli import main as _main
    _main()
