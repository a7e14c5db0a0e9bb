"""How many full training estimates per second does a what-if sweep run?

    python3 benchmarks/sweep_speed.py [--cases N] [--repeat R]

For a few models, three sweeps of N cases each, all evaluated in-process by
costmodel.whatif.evaluate (memoized trees and op costs, no pydantic
re-validation of specs):

* grid      -- a typical what-if grid: devices x optimizer x ZeRO x devices
               count x global batch, with a fixed micro-batch (few distinct shapes);
* per-call  -- the same cases through the public `estimate()`, one call each
               (names resolved, workload validated, no cache), for comparison;
* new shape -- every case a different micro-batch (nothing to reuse: each
               case builds its op tree; the worst case).

Prints one table: estimates per second (best of R runs) and the share of
cases the engine rejected as impossible (they count: the sweep evaluated them).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from costmodel import estimate  # noqa: E402
from costmodel.errors import CostModelError  # noqa: E402
from costmodel.whatif import evaluate, from_dict  # noqa: E402

MODELS = ("gpt2", "bert-base", "llama-2-7b", "t5-base", "resnet50", "vit-b16")
DEVICES = ("a100-80gb", "h100-sxm", "a100-40gb", "v100-32gb")


def grid(model: str, n: int) -> dict:
    # 4 devices x 5 optimizers x 4 ZeRO stages x 5 gpu counts = 400 per batch value
    batches = [512 * (i + 1) for i in range(max(1, -(-n // 400)))]
    return {"model": model, "workload": {"micro_batch": 4, "tokens": 1e9},
            "sweep": {"hardware": list(DEVICES), "optimizer": ["adamw", "sgd", "lion", "adam-8bit", "adafactor"],
                      "zero": [0, 1, 2, 3], "gpus": [8, 16, 32, 64, 128], "batch": batches}}


def shapes(model: str, n: int) -> dict:
    return {"model": model, "workload": {"tokens": 1e9}, "sweep": {"batch": list(range(1, n + 1))}}


def best(fn, repeat: int) -> float:
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    a = ap.parse_args()
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"what-if sweep speed: full training estimates per second ({a.cases} cases, best of "
                    f"{a.repeat}, one CPU core)", title_justify="left")
    for c in ("model", "grid /s", "impossible", "per-call estimate() /s", "new shape every case /s"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for m in a.models.split(","):
        w = from_dict(grid(m, a.cases))
        cases_all = list(evaluate(w))[: a.cases]
        n = len(cases_all)
        dt = best(lambda: evaluate(w), a.repeat)
        n_grid = w.n_cases
        bad = sum(1 for c in cases_all if c.error)
        sub = cases_all[: min(n, 400)]

        def per_call():
            for c in sub:
                wl = dict(w.workload)
                wl.update({k: v for k, v in c.assign.items() if k != "hardware"})
                try:
                    estimate(m, c.assign["hardware"], wl)
                except CostModelError:
                    pass
        dt_call = best(per_call, a.repeat)
        ns = min(a.cases, 400)
        ws = from_dict(shapes(m, ns))
        dt_shape = best(lambda: evaluate(ws), a.repeat)
        t.add_row(m, f"{n_grid / dt:,.0f}", f"{bad / n:.0%}", f"{len(sub) / dt_call:,.0f}", f"{ns / dt_shape:,.0f}")
    Console().print(t)


if __name__ == "__main__":
    main()
