"""Pictures: the roofline and sweep plots (matplotlib: optional extra `plot`).

The drawing tests are skipped without matplotlib; the missing-matplotlib
message is tested everywhere."""
import builtins
import importlib.util
import os
import textwrap

import pytest
from click.testing import CliRunner

from costmodel import estimate, load_hardware
from costmodel.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_without_matplotlib_one_line_and_exit_2(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_mpl(name, *a, **k):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_mpl)
    w = tmp_path / "w.yaml"
    w.write_text("model: gpt2\nsweep: {batch: [1, 2]}\n")
    for args in (["roofline", "gpt2", "-o", tmp_path / "r.png"], ["plot", "-f", w, "-o", tmp_path / "s.png"]):
        r = run(*args)
        assert r.exit_code == 2, r.output
        assert r.output.count("\n") == 1 and "pip install 'costmodel[plot]'" in r.output, r.output
        assert not (tmp_path / "r.png").exists() and not (tmp_path / "s.png").exists()


def test_roofline_points_lie_on_or_under_the_roof():
    """Each op's attained FLOP/s is at most min(peak, bandwidth x intensity)
    of its dtype's roof (the engine's roofline, seen from the plot's side)."""
    from costmodel.plot import roofline_points
    rep = estimate("gpt2", "a100-80gb", batch=4, seq=256)
    hw = load_hardware("a100-80gb")
    pts, off = roofline_points(rep)
    assert pts and 0 <= off < 0.2
    top = max(hw.peak_flops(d) for d in hw.supported_dtypes())
    for p in pts:
        assert p["flops_per_s"] <= min(top, hw.memory.bandwidth * p["intensity"]) * (1 + 1e-9), p
    # the points carry every op that has both FLOPs and bytes, and the shares add up to the non-plotted rest
    assert abs(sum(p["share"] for p in pts) + off - 1) < 1e-9


needs_mpl = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                               reason="matplotlib not installed (optional extra: pip install 'costmodel[plot]')")


@needs_mpl
def test_roofline_png(tmp_path):
    out = tmp_path / "roof.png"
    r = run("roofline", "resnet50", "-H", "v100-32gb", "--batch", "8", "-p", "fp16", "-o", out)
    assert r.exit_code == 0, r.output
    data = out.read_bytes()
    assert data[:8] == PNG and len(data) > 20_000
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".costmodel-")]


@needs_mpl
def test_sweep_plot_png_and_bad_axis(tmp_path):
    w = tmp_path / "w.yaml"
    w.write_text(textwrap.dedent("""
        model: gpt2
        workload: {seq: 512}
        sweep: {hardware: [a100-80gb, h100-sxm], batch: [1, 8, 64, 128]}
    """))
    out = tmp_path / "s.png"
    r = run("plot", "-f", w, "-o", out, "--y", "step_time_s,total_memory_bytes,mfu")
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == PNG
    r = run("plot", "-f", w, "-o", out, "--x", "batchsize")
    assert r.exit_code == 2 and "did you mean: batch" in r.output
    r = run("plot", "-f", w, "-o", tmp_path / "s.gif")
    assert r.exit_code == 2 and "expected .png, .svg or .pdf" in r.output
