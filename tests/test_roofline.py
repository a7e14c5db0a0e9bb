"""Roofline cases: memory-bound elementwise, compute-bound matmul, ridge points."""
import glob
import os

import pytest

from costmodel import estimate, load_hardware
from costmodel.engine import roofline

HW_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "hardware")
DEVICES = sorted(os.path.basename(f)[:-5] for f in glob.glob(os.path.join(HW_DIR, "*.yaml")))


def test_memory_bound_elementwise_op():
    # GELU on 1M bf16 elements on an A100 80GB: 8 FLOP/elem, reads + writes 4 bytes/elem
    hw = load_hardware("a100-80gb")
    n = 1 << 20
    t, bound = roofline(8 * n, 4 * n, hw.vector_flops("bf16"), 1.0, hw.memory.bandwidth, 1.0)
    assert bound == "memory"
    assert t == pytest.approx(4 * n / 2.039e12)


def test_compute_bound_large_matmul():
    hw = load_hardware("a100-80gb")
    n = 8192   # 2n^3 FLOPs over 3 n^2 bf16 matrices: intensity n/3 = 2731 FLOP/B >> ridge 153
    t, bound = roofline(2 * n ** 3, 3 * n * n * 2, hw.peak_flops("bf16"), 1.0, hw.memory.bandwidth, 1.0)
    assert bound == "compute"
    assert t == pytest.approx(2 * n ** 3 / 312e12)


@pytest.mark.parametrize("name", DEVICES)
def test_ridge_point_is_peak_over_bandwidth(name):
    hw = load_hardware(name)
    for dt in hw.supported_dtypes():
        assert hw.ridge_point(dt) == pytest.approx(hw.peak_flops(dt) / hw.memory.bandwidth)
    assert hw.sources and hw.tdp_watts > 0


def test_a100_ridge_point_value():
    # NVIDIA A100 80GB SXM datasheet: 312 TFLOP/s dense bf16, 2,039 GB/s -> 153 FLOP/byte
    assert load_hardware("a100-80gb").ridge_point("bf16") == pytest.approx(312e12 / 2.039e12)


def test_op_times_never_beat_the_roofline():
    r = estimate("gpt2", "a100-80gb", batch=2, seq=256)
    hw = load_hardware("a100-80gb")
    for c in r.ops:
        o = c.op
        peak = hw.vector_flops("bf16") if o.op_class == "elementwise" else hw.peak_flops("bf16")
        assert c.fwd_time >= o.fwd_flops / peak * (1 - 1e-12)
        assert c.fwd_time >= o.fwd_bytes / hw.memory.bandwidth * (1 - 1e-12)


def test_efficiency_factor_scales_compute_time():
    a = estimate("gpt3-1.3b", "a100-80gb", batch=8, seq=2048)
    b = estimate("gpt3-1.3b", "a100-80gb", batch=8, seq=2048, overrides={"hardware.efficiency.matmul": 0.5})
    assert b["step_time_s"] > a["step_time_s"]


def test_identical_blocks_are_built_once():
    r2 = estimate("gpt2", "a100-80gb", overrides={"model.layers": 2})
    r96 = estimate("gpt2", "a100-80gb", overrides={"model.layers": 96})
    assert len(r2.ops) == len(r96.ops)
    assert r96["params"] > r2["params"]
