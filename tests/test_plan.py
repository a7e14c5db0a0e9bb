"""`costmodel plan`: the bounded search returns exactly the Pareto front an exhaustive search finds,
every layout on it is what `estimate` says, and the constraints hold."""
import itertools
import json

import pytest
from click.testing import CliRunner

from costmodel import engine as E
from costmodel.catalog import load_hardware, load_model
from costmodel.cli import main
from costmodel.errors import CostModelError
from costmodel.plan import _divisors, plan
from costmodel.workload import Workload


def brute_force_front(model, hw_name, batch, gpus_max, tokens, capacity):
    """Time every layout plan may choose (same space: sequence parallel iff tp > 1, interleave 1) with
    the public engine, keep those that fit, and take the Pareto front of (step time, devices x time)."""
    spec = load_model(model)
    hw = E._apply_overrides(load_hardware(hw_name), {"memory.capacity_bytes": capacity}, "hardware.")
    cache, pts = {}, []
    for tp, pp, dp in itertools.product(range(1, 9), _divisors(spec.layers), _divisors(batch)):
        if tp * pp * dp > gpus_max:
            continue
        for mb, fl, z, mode in itertools.product(_divisors(batch // dp), (False, True), range(4),
                                                 ("none", "selective", "full")):
            if dp == 1 and z:
                continue
            try:
                wl = Workload(batch=batch, dp=dp, tp=tp, pp=pp, micro_batch=mb, flash=fl, zero=z, recompute=mode,
                              sequence_parallel=tp > 1, tokens=tokens)
                v = E.estimate_resolved(spec, hw, wl, cache=cache, explain=False).values
            except CostModelError:
                continue               # tp not dividing heads, pp not dividing layers, ...
            if v["fits"]:
                pts.append((v["step_time_s"], tp * pp * dp))
    front = [(t, n) for t, n in pts if not any(t2 <= t and n2 * t2 <= n * t and (t2, n2) != (t, n)
                                               for t2, n2 in pts)]
    return sorted(set(front))


def test_bounded_search_equals_exhaustive_search():
    # a device shrunk to 3.5 GB so that memory decides: the front mixes tp, ZeRO stages and micro-batches
    # (the peak includes the fp32 loss gradient, 2 x 2048 x 50257 x 4 B per sequence)
    res = plan("gpt3-125m", "a100-80gb", 1e9, gpus_max=16, batch=32,
               overrides={"hardware.memory.capacity_bytes": 3.5e9})
    got = sorted((x.step_time_s, x.gpus) for x in res["front"])
    assert len(got) >= 3 and len({(x.tp, x.zero) for x in res["front"]}) >= 2
    want = brute_force_front("gpt3-125m", "a100-80gb", 32, 16, 1e9, 3.5e9)
    assert [n for _, n in got] == [n for _, n in want]
    assert [t for t, _ in got] == pytest.approx([t for t, _ in want], rel=1e-12)
    # and it got there timing a fraction of the space
    assert res["stats"]["evaluated"] < res["stats"]["families"] * 12 / 3


def test_front_layouts_reproduce_estimate_and_form_a_pareto_front():
    res = plan("gpt3-1.3b", "a100-80gb", 20e9, gpus_max=64, batch=256)
    front = res["front"]
    assert front
    for x in front:
        r = E.estimate("gpt3-1.3b", "a100-80gb", dict(batch=256, dp=x.dp, tp=x.tp, pp=x.pp, zero=x.zero,
                                                      micro_batch=x.micro_batch, recompute=x.recompute,
                                                      flash=x.flash, sequence_parallel=x.sequence_parallel,
                                                      tokens=20e9))
        assert r["fits"] and r["total_memory_bytes"] == pytest.approx(x.memory_bytes, rel=1e-12)
        assert r["step_time_s"] == pytest.approx(x.step_time_s, rel=1e-12)
        assert r["train_time_s"] == pytest.approx(x.train_time_s, rel=1e-12)
        assert r["cost_usd"] == pytest.approx(x.cost_usd, rel=1e-12)
        assert x.gpus <= 64 and x.tp <= 8
    # fastest first; every slower layout is strictly cheaper
    for a, b in zip(front, front[1:]):
        assert a.train_time_s <= b.train_time_s and a.cost_usd > b.cost_usd


def test_budget_and_deadline_constrain_the_front():
    free = plan("gpt3-1.3b", "a100-80gb", 20e9, gpus_max=64, batch=256)["front"]
    cheapest = min(x.cost_usd for x in free)
    fastest = min(x.train_time_s for x in free)
    budget = plan("gpt3-1.3b", "a100-80gb", 20e9, gpus_max=64, batch=256, budget=cheapest * 1.01)["front"]
    assert budget and all(x.cost_usd <= cheapest * 1.01 for x in budget)
    days = fastest * 1.5 / 86400
    deadline = plan("gpt3-1.3b", "a100-80gb", 20e9, gpus_max=64, batch=256, deadline_days=days)["front"]
    assert deadline and all(x.train_time_s <= days * 86400 for x in deadline)
    none = plan("gpt3-1.3b", "a100-80gb", 20e9, gpus_max=64, batch=256, budget=cheapest * 0.5)["front"]
    assert none == []


def test_nothing_fits_is_an_empty_front_with_a_reason():
    """GPT-3 175B needs ~16 bytes x 175e9 = 2.8 TB of model states: 8 devices of 80 GiB cannot hold it."""
    res = CliRunner().invoke(main, ["plan", "gpt3-175b", "--tokens", "1e9", "--gpus-max", "8", "--batch", "8"])
    assert res.exit_code == 0
    assert "no layout fits in memory" in res.output


def test_cli_json_and_errors():
    res = CliRunner().invoke(main, ["plan", "gpt2", "--tokens", "1e8", "--gpus-max", "4", "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["front"] and {"gpus", "dp", "tp", "pp", "zero", "micro_batch", "recompute", "memory_bytes",
                           "train_time_s", "cost_usd"} <= set(d["front"][0])
    for args in (["--tokens", "0"], [], ["--tokens", "1e9", "--set", "tp=2"], ["--tokens", "1e9", "-H", "nope"],
                 ["--tokens", "1e9", "--gpus-max", "0"]):
        res = CliRunner().invoke(main, ["plan", "gpt2", *args])
        assert res.exit_code == 2 and res.output.startswith("error:") and res.output.count("\n") == 1, args
