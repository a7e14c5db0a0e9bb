"""Every bad input ends as one line on stderr, exit code 2, no traceback, no file.

The corpus lives in tests/bad_inputs/ (cases.yaml lists each case with the
message, line and field its error must show); everything runs end to end
through the CLI with click's CliRunner.
"""
import os
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from costmodel.catalog import load_hardware, load_model
from costmodel.cli import main, write_output
from costmodel.errors import CostModelError

HERE = Path(__file__).resolve().parent
BAD = HERE / "bad_inputs"
ROOT = HERE.parent
CASES = yaml.safe_load((BAD / "cases.yaml").read_text())["cases"]


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(r, args):
    assert r.exit_code == 2, (args, r.exit_code, r.output)
    err = r.stderr
    assert err.startswith("error: "), (args, err)
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    assert "Traceback" not in r.output and "please report this" not in err, err
    assert r.stdout == "", (args, r.stdout)
    return err.rstrip("\n")


def _case_id(c):
    return c.get("file") or " ".join(map(str, c["args"]))[:60]


def _args(case):
    if "file" in case:
        path = str(BAD / case["file"])
        if case.get("kind", "model") == "hardware":
            return ["estimate", "gpt2", "-H", path], path
        return ["estimate", path], path
    return [str(a).replace("{dir}", str(BAD)) for a in case["args"]], None


def test_version_and_help_are_not_errors():
    for args in (["--version"], ["--help"], ["estimate", "--help"]):
        r = run(args)
        assert r.exit_code == 0 and r.stderr == "", (args, r.output)


def test_every_corpus_file_is_listed():
    listed = {c["file"] for c in CASES if "file" in c}
    bases = {"tiny_gpt.yaml", "tiny_cnn.yaml", "tiny_hw.yaml", "cases.yaml"}
    on_disk = {p.name for p in BAD.glob("*.yaml")} - bases
    assert on_disk == listed, (on_disk - listed, listed - on_disk)


def test_the_base_files_are_valid():
    # every other corpus file differs from one of these in one place: the error is that place
    assert run(["estimate", BAD / "tiny_gpt.yaml"]).exit_code == 0
    assert run(["estimate", BAD / "tiny_cnn.yaml"]).exit_code == 0
    r = run(["estimate", BAD / "tiny_gpt.yaml", "-H", BAD / "tiny_hw.yaml"])
    assert r.exit_code == 0, r.output
    assert "fp32" in r.stdout          # no bf16 on this device: the default falls back


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bad_input_gives_one_clear_line(case):
    args, path = _args(case)
    err = assert_one_line_error(run(args), args)
    msgs = case["message"] if isinstance(case["message"], list) else [case["message"]]
    for m in msgs:
        assert m in err, err
    prefix = "error: "
    if path is not None:
        prefix += f"{path}:{case['line']}: " if case.get("line") else f"{path}: "
    if case.get("field"):
        prefix += f"{case['field']}: "
    elif path is not None and case.get("line"):
        prefix = prefix.rstrip()          # a field may follow: 'FILE:6: e[5]: ...'
    assert err.startswith(prefix), f"expected the line to start with {prefix!r}: {err!r}"


@pytest.mark.parametrize("case", [c for c in CASES if "file" in c][:12], ids=_case_id)
def test_no_output_file_on_error(case, tmp_path):
    args, _ = _args(case)
    out = tmp_path / "report.json"
    r = run(args + ["--format", "json", "-o", out])
    assert r.exit_code == 2
    assert list(tmp_path.iterdir()) == [], "an error left a file behind"


def test_an_error_keeps_the_previous_output_file(tmp_path):
    out = tmp_path / "report.json"
    out.write_text("previous run\n")
    r = run(["estimate", "gpt2", "--tp", "5", "--format", "json", "-o", out])
    assert r.exit_code == 2
    assert out.read_text() == "previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_failure_while_writing_leaves_nothing_half_written(tmp_path):
    out = tmp_path / "report.txt"
    out.write_text("previous run\n")
    # a lone surrogate cannot be encoded as UTF-8: the write fails part-way through
    with pytest.raises(UnicodeEncodeError):
        write_output("x" * 100_000 + "\ud800", str(out))
    assert out.read_text() == "previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"], "temp file left behind"


def test_a_successful_write_is_complete_and_readable(tmp_path):
    out = tmp_path / "r.json"
    r = run(["estimate", "gpt2", "--format", "json", "-o", out])
    assert r.exit_code == 0, r.output
    import json
    assert json.loads(out.read_text())["model"] == "gpt2"
    assert out.stat().st_mode & 0o044 == 0o644 & 0o044 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


# --- line numbers: every field of real spec files points at its own line ---------------
MARK = "BAD_VALUE_MARKER"


def _numeric_leaves(x, path=""):
    """(path, value) of every number / boolean in a loaded spec."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _numeric_leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numeric_leaves(v, f"{path}[{i}]")
    elif isinstance(x, (int, float)):
        yield path, x


def _set(d, path, value):
    keys = re.findall(r"[^.\[\]]+", path)
    for k in keys[:-1]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    last = keys[-1]
    if isinstance(d, list):
        d[int(last)] = value
    else:
        d[last] = value


@pytest.mark.parametrize("kind,name", [("model", "gpt2"), ("model", "t5-small"), ("model", "resnet18"),
                                       ("model", "lstm-2x1024"), ("model", "mlp-mnist"), ("model", "vit-b16"),
                                       ("hardware", "a100-80gb"), ("hardware", "v100-16gb"),
                                       ("hardware", "tpu-v4")])
def test_each_numeric_field_error_points_at_its_own_line(kind, name, tmp_path):
    """Replace one number at a time by text; the error must name that field and the
    line where the text is (found by searching the written file, not by our map)."""
    src = ROOT / ("models" if kind == "model" else "hardware") / f"{name}.yaml"
    if not src.exists():
        pytest.skip(f"{src.name} not shipped")
    base = yaml.safe_load(src.read_text())
    leaves = list(_numeric_leaves(base))
    assert leaves
    for path, _ in leaves:
        d = yaml.safe_load(src.read_text())
        _set(d, path, MARK)
        f = tmp_path / f"{name}.yaml"
        text = yaml.safe_dump(d, sort_keys=False)
        f.write_text(text)
        expected_line = next(i for i, ln in enumerate(text.splitlines(), 1) if MARK in ln)
        loader = load_model if kind == "model" else load_hardware
        with pytest.raises(CostModelError) as ei:
            loader(str(f))
        e = ei.value
        assert (e.field, e.line) == (path, expected_line), (path, e.render())
        os.utime(f, (1, 1 + len(path)))    # new mtime: the loader caches by path + mtime


def test_cli_shows_the_line_of_a_nested_layer_field(tmp_path):
    d = yaml.safe_load((ROOT / "models" / "resnet50.yaml").read_text())
    d["layers"][4]["blocks"] = 0
    f = tmp_path / "r.yaml"
    text = yaml.safe_dump(d, sort_keys=False)
    f.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "blocks: 0" in ln)
    err = assert_one_line_error(run(["estimate", f]), f)
    assert err.startswith(f"error: {f}:{line}: layers[4].blocks: 0 is too small"), err


# --- impossible workloads: a verdict, never a crash or a negative number ----------------
def _json(args):
    import json
    r = run(args + ["--format", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _no_negatives(d):
    bad = {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0
           and k != "memory_headroom_bytes"}
    assert not bad, bad


@pytest.mark.parametrize("mode", ["train", "inference"])
def test_a_model_that_fits_nowhere_gets_a_verdict(mode):
    hw = "v100-16gb" if (ROOT / "hardware" / "v100-16gb.yaml").exists() else str(BAD / "tiny_hw.yaml")
    args = ["estimate", "gpt3-175b", "-H", hw, "--mode", mode] + (["--seq", "1024"] if mode == "inference" else [])
    d = _json(args)
    assert d["fits"] is False and d["max_batch"] == 0
    assert d["total_memory_bytes"] > d["memory_capacity_bytes"]
    assert d["memory_headroom_bytes"] < 0
    _no_negatives(d)
    r = run(args)                                  # the table says so in words
    assert r.exit_code == 0 and "does NOT fit" in r.stdout


def test_resnet50_at_8_pixels_runs_like_torchvision():
    # Not an error: every ResNet conv/pool pads, so an 8x8 image shrinks to 4, 2, 1, 1, 1
    # (torchvision's resnet50 accepts a 1x3x8x8 input and returns 1x1000; checked with
    # torchvision 0.29.1 in /work/venvs/tv). VGG16 at 8 pixels is the empty-output case.
    d = _json(["estimate", "resnet50", "--image", "8"])
    assert d["forward_flops"] > 0 and d["fits"] is True
    _no_negatives(d)


def test_default_inference_prompt_leaves_room_for_generation():
    d = _json(["estimate", "gpt2", "--mode", "inference"])
    assert d["workload"]["seq"] + d["workload"]["gen_tokens"] <= 1024


def test_huge_but_finite_workloads_do_not_crash():
    d = _json(["estimate", "gpt2", "--batch", str(10 ** 23)])
    assert d["fits"] is False
    _no_negatives(d)
    d = _json(["estimate", "gpt2", "--set", f"model.layers={10 ** 27}"])
    assert d["fits"] is False and d["max_batch"] == 0
    _no_negatives(d)


def test_plan_with_a_budget_below_one_step():
    if "plan" not in main.commands:
        pytest.skip("no `plan` command yet")
    cmd = main.commands["plan"]
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    budget = next((o for o in ("--budget", "--budget-usd", "--max-cost", "--usd") if o in opts), None)
    if budget is None:
        pytest.skip(f"`plan` has no budget option ({sorted(opts)})")
    r = run(["plan", "gpt2", budget, "1e-9"])
    assert r.exit_code in (0, 2), r.output
    assert "Traceback" not in r.output
    if r.exit_code == 2:
        assert_one_line_error(r, "plan")
    else:
        assert re.search(r"no .*(fit|plan|configuration)|below|exceed|not enough", r.output, re.I), r.output
