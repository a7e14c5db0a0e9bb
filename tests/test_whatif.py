"""What-if files: sweeps give the same numbers as one `estimate` call per case;
file mistakes stop with FILE:LINE; sorting, filtering and output formats."""
import csv
import io
import json
import os
import textwrap

import pytest
from click.testing import CliRunner

from costmodel import estimate
from costmodel.cli import main
from costmodel.errors import CostModelError
from costmodel.whatif import classify, evaluate, load_whatif, run_whatif


def write(tmp_path, text, name="w.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return str(p)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


SWEEP_1000 = """
model: gpt2
hardware: a100-80gb
workload: {seq: 256, tokens: 1.0e8}
overrides:
  hardware.memory.bandwidth: 1.8e12
sweep:
  model: [gpt2, bert-base]
  hardware: [a100-80gb, h100-sxm]
  model.layers: [6, 12]
  optimizer: [adamw, sgd, adafactor, adam-8bit, lion]
  zero: [0, 3]
zip:
  batch:       [8, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 64]
  gpus:        [1, 2, 4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 3]
  recompute:   [none, none, full, selective, none, full, selective, none, full, none, selective, full, none]
"""


def _individual(case, w):
    a = case.assign
    wl = dict(w.workload)
    over = {"hardware.memory.bandwidth": 1.8e12}
    for k, v in a.items():
        kind, rest = classify(k)
        if kind == "workload":
            wl[rest] = v
        elif kind in ("model.", "hardware."):
            over[k] = v
    return estimate(a.get("model", w.model), a.get("hardware", w.hardware), wl, overrides=over)


def test_a_1000_case_sweep_equals_individual_estimates(tmp_path):
    """The sweep fast path (memoized trees and costs, no re-validation) must
    give exactly the numbers of separate `estimate` calls, impossible cases
    included (gpus 3 does not divide batch 64)."""
    w = load_whatif(write(tmp_path, SWEEP_1000))
    assert w.n_cases == 2 * 2 * 2 * 5 * 2 * 13 == 1040
    cases = evaluate(w)
    assert len(cases) == 1040
    n_err = 0
    for c in cases:
        try:
            ref = _individual(c, w)
        except CostModelError as e:
            assert c.report is None and c.error == e.render(), (c.assign, c.error, e.render())
            n_err += 1
            continue
        assert c.error is None, (c.assign, c.error)
        assert c.report.values == ref.values, c.assign
        assert c.report.workload == ref.workload
        assert [(o.path, o.count, o.fwd_time, o.bwd_time) for o in c.report.ops] == \
               [(o.path, o.count, o.fwd_time, o.bwd_time) for o in ref.ops]
    assert n_err == 2 * 2 * 2 * 5 * 2     # exactly the gpus=3 column of the zip
    # the swept values really reached the engine
    layers = {(c.assign["model"], c.assign["model.layers"]): c.report.values["params"] for c in cases if c.report}
    assert layers[("gpt2", 6)] < layers[("gpt2", 12)] == 124439808


def test_grid_order_and_zip(tmp_path):
    w = load_whatif(write(tmp_path, """
        model: gpt2
        sweep: {batch: [1, 2], hardware: [a100-80gb, h100-sxm]}
        zip: {seq: [128, 256], micro_batch: [1, 1]}
    """))
    cases = evaluate(w)
    got = [(c.assign["batch"], c.assign["hardware"], c.assign["seq"]) for c in cases]
    assert got[:4] == [(1, "a100-80gb", 128), (1, "a100-80gb", 256), (1, "h100-sxm", 128), (1, "h100-sxm", 256)]
    assert len(got) == 8
    assert all(c.report.workload["seq"] == c.assign["seq"] for c in cases)


@pytest.mark.parametrize("text, line, needle", [
    ("model: gpt2\nsweeps: {batch: [1, 2]}\n", 2, "did you mean: sweep"),
    ("model: gpt2\nsweep:\n  batch: [1, 2]\n  optimiser: [sgd]\n", 4, "did you mean: optimizer"),
    ("model: gpt2\nsweep:\n  batch:\n    - 8\n    - eight\n", 5, "valid integer"),
    ("model: gpt2\nsweep:\n  hardware: [a100-80gb, h100-sxn]\n", 3, "did you mean: h100-sxm"),
    ("model: gpt2\nsweep:\n  model.layerz: [2]\n", 3, "did you mean: layers"),
    ("model: gpt2\nworkload:\n  batch: 8\n  sequence: 128\n", 4, "did you mean: seq"),
    ("model: gpt2\nzip:\n  batch: [1, 2]\n  seq: [128]\n", 4, "differ in length"),
    ("model: gpt2\nwhere: ['fits is true']\n", 2, "cannot parse filter"),
    ("model: gpt2\ncolumns: [step_time_s, step_tim]\n", 2, "did you mean: step_time_s"),
    ("model: gpt2\nsort: -mfuu\n", 2, "did you mean: mfu"),
    ("model: gpt2\nsweep:\n  batch: [1]\nzip:\n  batch: [2]\n", 5, "already swept"),
    ("model: gpt2\noverrides:\n  hardware.memory.bandwith: 1.0e12\n", 3, "did you mean: bandwidth"),
    ("model: gpt2\nsweep:\n  batch: 8\n", 3, "expected a list"),
    ("hardware: a100-80gb\n", 1, "missing field 'model'"),
])
def test_file_mistakes_name_file_line_and_field(tmp_path, text, line, needle):
    p = write(tmp_path, text)
    r = run("estimate", "-f", p)
    assert r.exit_code == 2, r.output
    out = r.output.strip()
    assert out.count("\n") == 0, out                 # one line, no traceback
    assert out.startswith(f"error: {p}:{line}:"), out
    assert needle in out, out


def test_impossible_cases_keep_their_row_with_the_reason(tmp_path):
    p = write(tmp_path, """
        model: gpt2
        workload: {batch: 16}
        sweep: {tp: [1, 5]}
    """)
    r = run("estimate", "-f", p, "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["cases"] == 2 and d["errors"] == 1
    bad = [row for row in d["rows"] if row.get("error")]
    assert len(bad) == 1 and "tp 5 does not divide heads 12" in bad[0]["error"]


def test_sort_where_limit_and_formats(tmp_path):
    p = write(tmp_path, """
        model: gpt2
        workload: {seq: 1024}
        sweep: {batch: [4, 8, 16, 32, 64, 128]}
        columns: [batch, step_time_s, total_memory_bytes, fits]
    """)
    r = run("estimate", "-f", p, "--format", "csv", "--sort", "-step_time_s", "--where", "fits=true",
            "--where", "step_time_s>0.05")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert rows and all(row["fits"] == "true" and float(row["step_time_s"]) > 0.05 for row in rows)
    times = [float(row["step_time_s"]) for row in rows]
    assert times == sorted(times, reverse=True)
    # the same cases through the library, unfiltered: the filter removed exactly what it should
    full = json.loads(run_whatif(p, fmt="json"))["rows"]
    expect = [x for x in full if x["fits"] and x["step_time_s"] > 0.05]
    assert [int(row["batch"]) for row in rows] == [x["batch"] for x in sorted(expect, key=lambda x: -x["step_time_s"])]
    # markdown and the table name the columns
    md = run("estimate", "-f", p, "--format", "markdown").output
    assert md.count("\n| ") >= 7 and "| batch | step_time_s |" in md
    tab = run("estimate", "-f", p).output
    assert "step_time_s" in tab and "6 cases" in tab


def test_output_file_is_written_atomically(tmp_path):
    p = write(tmp_path, "model: gpt2\nsweep: {batch: [1, 2]}\n")
    out = tmp_path / "res.json"
    r = run("estimate", "-f", p, "--format", "json", "-o", out)
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["cases"] == 2
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".costmodel-")]


def test_cli_options_change_the_base_scenario(tmp_path):
    p = write(tmp_path, """
        model: gpt2
        workload: {batch: 4, seq: 128}
        sweep: {hardware: [a100-80gb, h100-sxm]}
        columns: [hardware, batch, seq, params]
    """)
    d = json.loads(run("estimate", "-f", p, "--format", "json", "--batch", "8", "--set", "model.layers=6").output)
    assert [r["batch"] for r in d["rows"]] == [8, 8]
    six = estimate("gpt2", "a100-80gb", batch=8, seq=128, overrides={"model.layers": 6})
    assert {r["params"] for r in d["rows"]} == {six["params"]}
    # a model given on the command line replaces the file's
    d = json.loads(run("estimate", "bert-base", "-f", p, "--format", "json").output)
    assert {r["params"] for r in d["rows"]} == {109482240}


def test_model_paths_are_relative_to_the_file(tmp_path):
    sub = tmp_path / "specs"
    sub.mkdir()
    src = os.path.join(os.path.dirname(__file__), "..", "models", "gpt2.yaml")
    (sub / "mine.yaml").write_text(open(src).read().replace("name: gpt2", "name: mine"))
    p = write(tmp_path, "model: specs/mine.yaml\nsweep: {batch: [1, 2]}\ncolumns: [model, params]\n")
    d = json.loads(run_whatif(p, fmt="json"))
    assert [r["model"] for r in d["rows"]] == ["mine", "mine"] and d["rows"][0]["params"] == 124439808


def test_nested_columns_and_workload_columns(tmp_path):
    p = write(tmp_path, """
        model: gpt2
        workload: {batch: 64, gpus: 8, seq: 128}
        columns: [micro_batch, dp, comm.data_parallel.time_s, memory_stage]
    """)
    d = json.loads(run_whatif(p, fmt="json"))
    row = d["rows"][0]
    ref = estimate("gpt2", batch=64, gpus=8, seq=128)
    assert row["micro_batch"] == 8 and row["dp"] == 8
    assert row["comm.data_parallel.time_s"] == ref["comm"]["data_parallel"]["time_s"]


def test_compare_models_and_devices():
    r = run("compare", "gpt2", "bert-base", "--batch", "4", "--seq", "128", "--format", "json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["rows"]
    assert [x["model"] for x in rows] == ["gpt2", "bert-base"]
    assert rows[1]["step_time_s"] == estimate("bert-base", batch=4, seq=128)["step_time_s"]
    r = run("compare", "a100-80gb", "h100-sxm", "--model", "gpt2", "--batch", "4")
    assert r.exit_code == 0, r.output
    assert "a100-80gb" in r.output and "h100-sxm" in r.output and "speed vs first" in r.output
    r = run("compare", "a100-80gb", "h100-sxn", "--model", "gpt2")
    assert r.exit_code == 2 and "did you mean: h100-sxm" in r.output


def test_schema_command_writes_three_schemas(tmp_path):
    r = run("schema", "-o", tmp_path / "s")
    assert r.exit_code == 0, r.output
    names = sorted(os.listdir(tmp_path / "s"))
    assert names == ["hardware.schema.json", "model.schema.json", "whatif.schema.json"]
    wi = json.loads((tmp_path / "s" / "whatif.schema.json").read_text())
    assert {"model", "hardware", "workload", "overrides", "sweep", "zip", "columns"} <= set(wi["properties"])
    model = json.loads((tmp_path / "s" / "model.schema.json").read_text())
    assert "transformer" in json.dumps(model) and "parallel_residual" in json.dumps(model)


def test_examples_are_valid():
    """Every shipped example parses and evaluates."""
    ex = os.path.join(os.path.dirname(__file__), "..", "examples")
    files = sorted(f for f in os.listdir(ex) if f.endswith(".yaml")) if os.path.isdir(ex) else []
    assert len(files) >= 12
    for f in files:
        w = load_whatif(os.path.join(ex, f))
        cases = evaluate(w)
        assert any(c.report is not None for c in cases), f
