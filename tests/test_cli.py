"""The CLI end to end through click's CliRunner."""
import csv
import io
import json

from click.testing import CliRunner

from costmodel.cli import main

REQUIRED = {"schema_version", "model", "hardware", "workload", "params", "forward_flops", "backward_flops",
            "step_flops", "forward_matmul_flops", "weight_bytes", "activation_bytes", "forward_time_s",
            "backward_time_s", "step_time_s", "arithmetic_intensity", "bound", "ops"}


def run(*args):
    r = CliRunner().invoke(main, list(args))
    return r


def test_default_estimate_prints_a_table():
    r = run("estimate", "bert-base")
    assert r.exit_code == 0, r.output
    assert "109,482,240" in r.output and "GiB" in r.output and "GB" in r.output
    assert "bound" in r.output


def test_json_has_the_stable_fields():
    r = run("estimate", "gpt2", "--format", "json", "--batch", "2", "--seq", "128")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert REQUIRED <= set(d)
    assert "tokens_per_s" in d
    assert d["workload"]["batch"] == 2 and d["workload"]["seq"] == 128 and d["workload"]["precision"] == "bf16"
    op = d["ops"][0]
    assert {"name", "kind", "count", "flops", "bytes", "params", "time_s", "intensity", "bound"} <= set(op)
    # the ops list accounts for the totals: forward FLOPs = sum(count * flops) (single device, micro = batch)
    assert sum(o["count"] * o["flops"] for o in d["ops"]) == d["forward_flops"]
    assert sum(o["count"] * o["matmul_flops"] for o in d["ops"]) == d["forward_matmul_flops"]


def test_images_report_samples_per_second():
    d = json.loads(run("estimate", "resnet50", "--format", "json", "--batch", "8").output)
    assert "samples_per_s" in d and d["workload"]["image"] == 224


def test_csv_and_markdown():
    r = run("estimate", "t5-small", "--format", "csv", "--detail", "op")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert rows and rows[0]["name"]
    r = run("estimate", "vit-b16", "--format", "markdown")
    assert r.exit_code == 0 and r.output.startswith("### vit-b16")


def test_precision_default_falls_back_to_fp32_without_bf16():
    d = json.loads(run("estimate", "bert-base", "--hardware", "v100-32gb", "--format", "json").output)
    assert d["workload"]["precision"] == "fp32"


def test_inference_mode_reports_decode():
    d = json.loads(run("estimate", "llama-2-7b", "--mode", "inference", "--batch", "16", "--seq", "4096",
                       "--gen-tokens", "0", "--format", "json").output)
    # 2 (K,V) x 32 layers x 16 seqs x 32 heads x 128 x 4096 positions x 2 bytes
    assert d["kv_cache_bytes"] == 2 * 32 * 16 * 32 * 128 * 4096 * 2


def test_set_overrides_and_output_file(tmp_path):
    out = tmp_path / "r.json"
    r = run("estimate", "gpt2", "--set", "model.layers=24", "--format", "json", "-o", str(out))
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert d["params"] == 124_439_808 + 12 * 7_087_872


def test_models_hardware_show():
    assert "gpt3-175b" in run("models").output
    assert "a100-80gb" in run("hardware").output
    r = run("show", "a100-80gb")
    assert r.exit_code == 0 and "ridge point" in r.output
    r = run("show", "gpt2")
    assert r.exit_code == 0 and "124,439,808" in r.output


def test_unknown_model_is_a_one_line_error():
    r = run("estimate", "bert-bas")
    assert r.exit_code == 2
    assert "did you mean" in r.output and "bert-base" in r.output
    assert "Traceback" not in r.output
