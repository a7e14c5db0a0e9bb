"""Layer 3 of validation: predicted vs measured on recorded data (no torch needed).

The data is validation/cpu-*/…json, recorded on the development host by
`costmodel measure --quick` (see validation/README.md); the calibration in
hardware/cpu-host.yaml was fitted to its single-op rows by
`costmodel validate --calibrate`. These tests re-derive everything from the
data: the calibration must be reproducible from the single-op rows alone,
and the whole-step rows -- never seen by the fit -- judge it.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import shutil

import pytest
import yaml
from click.testing import CliRunner

from costmodel.catalog import load_hardware
from costmodel.cli import main
from costmodel.validate import calibrate as K
from costmodel.validate import compare as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = sorted(glob.glob(os.path.join(ROOT, "validation", "cpu-*", "*.json")))

# Acceptance thresholds on the calibrated median |error| of whole-step rows
# (the issue asks for 10 %). On the recorded data: time 9.0 % (inference
# 11.4 %, training 8.1 %), peak memory 1.7 %. The host is shared and noisy:
# the same step measured minutes apart differs by up to 20 % (gpt2-medium
# training 3.68 s here, 4.45 s in the previous recording).
TIME_THRESHOLD = 0.10
MEMORY_THRESHOLD = 0.10
TIME_WHY = ""

# Nothing in the shipped catalog or data may change while these tests run
# (--calibrate writes YAML: tests point it at a temporary copy).
GUARDED = [os.path.join(ROOT, d) for d in ("hardware", "models", "validation")]


def _hashes() -> dict:
    out = {}
    for d in GUARDED:
        for dirpath, _, files in os.walk(d):
            for f in files:
                path = os.path.join(dirpath, f)
                with open(path, "rb") as fh:
                    out[path] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module", autouse=True)
def shipped_files_untouched():
    before = _hashes()
    yield
    after = _hashes()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"tests modified shipped files: {changed}"


@pytest.fixture(scope="module")
def doc():
    assert DATA, "no recorded CPU data under validation/cpu-*/ (record it with `costmodel measure --quick`)"
    return C.load_data(DATA[-1])


@pytest.fixture(scope="module")
def hw():
    h = load_hardware("cpu-host")
    assert h.calibration is not None, "hardware/cpu-host.yaml has no calibration (run `costmodel validate --calibrate`)"
    return h


def test_data_is_a_complete_recording(doc):
    cats = {r["category"] for r in doc["rows"] if "time_s" in r}
    assert cats == {"single_op", "train_step", "inference"}
    assert doc["device"]["kind"] == "cpu" and doc["device"]["torch"]
    for r in doc["rows"]:
        if r["category"] != "single_op" and "time_s" in r:
            assert r["peak_memory_bytes"] > 0 and r["time_s"] > 0


def test_calibration_comes_from_this_data(doc, hw):
    assert os.path.basename(DATA[-1]) in hw.calibration.source
    assert hw.calibration.date == doc["date"]


def test_calibration_reproducible_from_single_op_rows(doc, hw):
    """Refit from the data alone: the committed curves predict the single ops as the refit does."""
    singles = [r for r in doc["rows"] if r["category"] == "single_op" and "time_s" in r]
    run = C.as_run(doc, hw)
    refit = K.round_calibration(K.fit(singles, C.as_run(doc, hw.model_copy(update={"calibration": None})),
                                      source="test", date=doc["date"]))
    for r in singles:
        a, b = C.predict_single(r, run), C.predict_single(r, refit)
        assert abs(a - b) <= 0.02 * b, r["id"]


def test_fit_never_sees_whole_step_rows(doc, hw):
    """Hold-out: scrambling every whole-step measurement leaves the fit unchanged."""
    rows = json.loads(json.dumps(doc["rows"]))
    for r in rows:
        if r["category"] != "single_op" and "time_s" in r:
            r["time_s"] *= 7.0
    base = C.as_run(doc, hw.model_copy(update={"calibration": None}))
    singles = [r for r in doc["rows"] if r["category"] == "single_op"]
    a = K.fit(singles, base, source="x", date="d", sweeps=2)
    b = K.fit(rows, base, source="x", date="d", sweeps=2)
    assert a.calibration == b.calibration


def test_calibrated_whole_step_errors(doc, hw):
    cal = C.compare(doc, hw).to_dict()
    raw = C.compare(doc, hw.model_copy(update={"calibration": None})).to_dict()
    print(f"\nwhole-step median |error|: time {cal['median_step_time_error']:.1%} calibrated "
          f"({raw['median_step_time_error']:.1%} uncalibrated), peak memory {cal['median_peak_memory_error']:.1%}"
          + (f"\ntime threshold {TIME_THRESHOLD:.0%}, not 10 %: {TIME_WHY}" if TIME_THRESHOLD > 0.10 else ""))
    assert cal["median_step_time_error"] <= TIME_THRESHOLD, TIME_WHY
    assert cal["median_peak_memory_error"] <= MEMORY_THRESHOLD
    assert cal["median_step_time_error"] < raw["median_step_time_error"], "calibration must help on held-out rows"


def test_validate_json_report(doc):
    res = CliRunner().invoke(main, ["validate", DATA[-1], "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    for k in ("median_step_time_error", "max_step_time_error", "median_peak_memory_error", "device", "rows"):
        assert k in d
    assert d["device"] == doc["device"]["name"]
    assert len(d["rows"]) == len(doc["rows"])
    assert d["max_step_time_error"] >= d["median_step_time_error"]


def test_calibrate_writes_yaml_keeping_other_lines(tmp_path, doc):
    src = os.path.join(ROOT, "hardware", "cpu-host.yaml")
    dst = tmp_path / "cpu-host.yaml"
    shutil.copy(src, dst)
    before = [ln for ln in open(src).read().splitlines()]
    keep = before[: next(i for i, ln in enumerate(before) if ln.startswith("calibration:"))] \
        if any(ln.startswith("calibration:") for ln in before) else before
    res = CliRunner().invoke(main, ["validate", DATA[-1], "--calibrate", "--hardware", str(dst)])
    assert res.exit_code == 0, res.output
    assert f"written into {dst}" in res.output.replace("\n", "")
    after = open(dst).read().splitlines()
    assert after[: len(keep)] == keep
    cal = yaml.safe_load(open(dst))["calibration"]
    assert set(cal["curves"]) <= {"matmul", "attention", "conv", "elementwise"}
    assert set(cal["memory_curves"]) == {"elementwise", "optimizer"}     # both measured at >= 4 sizes
    assert load_hardware(str(dst)).calibration is not None
    # the written file predicts exactly what the shipped one does (same data, same fit)
    a, b = load_hardware(str(dst)), load_hardware("cpu-host")
    for r in doc["rows"][:: 5]:
        if r["category"] == "single_op":
            assert C.predict_single(r, C.as_run(doc, a)) == pytest.approx(C.predict_single(r, C.as_run(doc, b)),
                                                                         rel=0.02), r["id"]


def test_validate_table_reads_well():
    """Not a terminal: a wide table, one line per scenario, times with units."""
    res = CliRunner().invoke(main, ["validate", DATA[-1]])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    doc = C.load_data(DATA[-1])
    for r in doc["rows"]:
        line = next((ln for ln in lines if f" {r['id']} " in ln), None)
        assert line is not None, f"{r['id']} not on one line"
        assert any(u in line for u in (" µs ", " ms ", " s ")), line
    assert "whole_step" in res.output and "e-0" not in res.output


def test_measurement_setup_is_what_the_engine_predicts(doc):
    """Whole-step rows are predicted with the optimizer implementation and
    zero_grad mode the measurement used (recorded in each row)."""
    for r in doc["rows"]:
        if r["category"] == "train_step":
            wl = C.step_workload(r, doc["device"]["kind"])
            assert wl["optimizer_impl"] == r["optimizer_impl"] == "single-tensor"     # torch's default on a CPU
            assert wl["zero_grad"] == "zero" and r["zero_grad"] == "set_to_none=False"
    impls = {r["engine_update"]["impl"] for r in doc["rows"] if r.get("engine_update")}
    assert impls == {"single-tensor"}


def test_update_rows_cover_the_models_tensor_sizes(doc):
    """The optimizer curve is fitted on single tensors from 16 Ki to 64 Mi
    elements: the judged models' tensors (biases to gpt2-medium's 51.5 M-element
    embedding) lie inside that range, so the curve interpolates."""
    from costmodel.catalog import load_model
    from costmodel.engine import _param_tensors, resolve, train_profiles
    from costmodel.workload import Workload
    sizes = [r["engine_update"]["elements"] for r in doc["rows"] if r.get("engine_update")]
    hw = load_hardware("cpu-host")
    for name in {r["model"] for r in doc["rows"] if r["category"] == "train_step"}:
        F = train_profiles(resolve(load_model(name), hw, Workload(batch=1, precision="fp32")))[1]
        big = max(n for n, _ in _param_tensors(F))
        assert min(sizes) <= big <= max(sizes), name


def test_memory_curve_shape():
    from costmodel.specs.hardware import MemoryCurve
    c = MemoryCurve(cache_eff=2.0, dram_eff=0.5, cache_bytes=1e6, order=2.0)
    assert c.efficiency(0) == 2.0
    assert c.efficiency(1e6) == pytest.approx(1 / (0.5 / 2.0 + 0.5 / 0.5))   # half the traffic from each level
    assert c.efficiency(1e12) == pytest.approx(0.5, rel=1e-6)
    assert c.efficiency(1e5) > c.efficiency(1e6) > c.efficiency(1e7)


def test_optimizer_impl_and_zero_grad_on_uncalibrated_hardware():
    """Unfused AdamW moves 80 bytes per fp32 parameter against the fused 28
    (torch/optim/adam.py kernel list in engine.update_bytes_per_param, checked
    against torch itself in tests/test_validate.py); zero_grad="zero" adds
    4 passes over the fp32 gradient (16 bytes). Uncalibrated hardware: the
    same bandwidth for all, so the times scale by exactly these ratios."""
    from costmodel.engine import estimate
    base = dict(batch=8, seq=512, precision="fp32")
    t = {k: estimate("gpt2", "a100-80gb", dict(base, **kw)).values["optimizer_time_s"]
         for k, kw in (("fused", {}), ("foreach", {"optimizer_impl": "foreach"}),
                       ("zero", {"zero_grad": "zero"}))}
    assert t["foreach"] / t["fused"] == pytest.approx(80 / 28)
    assert t["zero"] / t["fused"] == pytest.approx((28 + 16) / 28)
    res = CliRunner().invoke(main, ["estimate", "gpt2", "--hardware", "a100-80gb", "--optimizer", "lion",
                                    "--set", "workload.optimizer_impl=foreach"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "'lion'" in res.output, res.output


def test_unsupported_unfused_optimizer_is_an_error():
    from costmodel.engine import estimate
    from costmodel.errors import CostModelError
    with pytest.raises(CostModelError, match="modelled only for"):
        estimate("gpt2", "a100-80gb", dict(batch=8, optimizer="lion", optimizer_impl="foreach"))


def test_calibration_only_terms_need_calibrated_hardware(hw):
    """Uncalibrated hardware keeps its numbers: the tied-embedding gradient sum
    and the per-tensor update costing exist only with calibrated memory curves."""
    from costmodel.engine import tied_grad_sum_time, update_time
    from costmodel.memory import state_dtypes
    raw = hw.model_copy(update={"calibration": None})
    assert tied_grad_sum_time(raw, 38597376, 4) == 0.0
    assert tied_grad_sum_time(hw, 38597376, 4) > 0.0
    d = state_dtypes("fp32", False, False)
    one = update_time(raw, "adamw", "fused", "set_to_none", d, 8.0, [(1000, 1)])
    assert one == pytest.approx(1000 * 28 / raw.memory.bandwidth)
    assert not math.isnan(update_time(hw, "adamw", "single-tensor", "zero", d, 8.0, [(1000, 1)]))


def test_bad_data_is_one_line_error(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    res = CliRunner().invoke(main, ["validate", str(p)])
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1
    p.write_text(json.dumps({"rows": []}))
    res = CliRunner().invoke(main, ["validate", str(p)])
    assert res.exit_code == 2 and "costmodel.validation" in res.output
