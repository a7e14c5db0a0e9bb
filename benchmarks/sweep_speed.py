"""How many full training estimates per second does a what-if sweep run?

    python3 benchmarks/sweep_speed.py [--cases N] [--repeat R] [--models a,b]

For a few models, sweeps of N cases each (400 at most for the last four),
all evaluated in-process by costmodel.whatif.evaluate (memoized trees and op
costs, no pydantic re-validation of specs):

* grid        -- a typical what-if grid: devices x optimizer x ZeRO x devices
                 count x global batch, with a fixed micro-batch (few distinct shapes);
* per-call    -- the same cases through the public `estimate()`, one call each
                 (names resolved, workload validated, explanations attached);
* batch sweep -- every case a new micro-batch (batch 1..N on one device): no
                 tree is built after the second case (costmodel/fastpath.py:
                 every op quantity is affine in the batch, verified per model;
                 results identical to a fresh build, tests/test_fastpath.py);
* same, fast path off -- the batch sweep building every case's tree (as before);
* new seq / image -- every case a new sequence length (image size for CNNs):
                 a new op tree every case, the worst case (ViT: fixed image, '-').

Prints one table: estimates per second (best of R runs) and the share of
cases the engine rejected as impossible (they count: the sweep evaluated them).
The machine's other load moves these numbers by 10-30 %: compare columns of
one run, not runs. One run (2026-11-29, 2-core container, --repeat 3, after the
peak-memory ledger gained the backward working set):

    model      grid    estimate() per call  batch sweep  batch, no fast path  new seq/image each
    gpt2       16,162  3,999                 8,915       2,299                2,292
    bert-base  16,377  4,105                 9,324       2,308                2,236
    llama-2-7b 16,582  4,252                 8,176       2,659                2,047
    t5-base    15,592  3,060                 6,534       1,074                1,070
    resnet50   15,684  2,299                 5,362         615                  593
    vit-b16    15,685  4,450                 9,594       1,927                -

A typical what-if grid runs well above 10,000 full training estimates per second. A batch
sweep's first two micro-batches pay for the affine model (one build each, plus checks); after
that every case still evaluates each op's roofline and the backward working set, which keeps
it at 5,000-9,600 /s.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from costmodel import estimate, fastpath  # noqa: E402
from costmodel.catalog import load_model  # noqa: E402
from costmodel.errors import CostModelError  # noqa: E402
from costmodel.specs.model import CNNSpec, RNNSpec, TransformerSpec  # noqa: E402
from costmodel.whatif import evaluate, from_dict  # noqa: E402

MODELS = ("gpt2", "bert-base", "llama-2-7b", "t5-base", "resnet50", "vit-b16")
DEVICES = ("a100-80gb", "h100-sxm", "a100-40gb", "v100-32gb")


def grid(model: str, n: int) -> dict:
    # 4 devices x 5 optimizers x 4 ZeRO stages x 5 gpu counts = 400 per batch value
    batches = [512 * (i + 1) for i in range(max(1, -(-n // 400)))]
    return {"model": model, "workload": {"micro_batch": 4, "tokens": 1e9},
            "sweep": {"hardware": list(DEVICES), "optimizer": ["adamw", "sgd", "lion", "adam-8bit", "adafactor"],
                      "zero": [0, 1, 2, 3], "gpus": [8, 16, 32, 64, 128], "batch": batches}}


def batches(model: str, n: int) -> dict:
    return {"model": model, "workload": {"tokens": 1e9}, "sweep": {"batch": list(range(1, n + 1))}}


def new_trees(model: str, n: int) -> dict | None:
    """A sweep whose every case has a new op tree (sequence length or image size), or None."""
    spec = load_model(model)
    if isinstance(spec, (TransformerSpec, RNNSpec)):
        top = spec.max_positions if isinstance(spec, TransformerSpec) and spec.position == "learned" else 1 << 20
        seqs = [s for s in range(16, 16 + 4 * n, 4) if s <= top][:n]
        return {"model": model, "workload": {"batch": 8, "tokens": 1e9}, "sweep": {"seq": seqs}}
    if isinstance(spec, CNNSpec):
        return {"model": model, "workload": {"batch": 8, "tokens": 1e9},
                "sweep": {"image": list(range(64, 64 + n))}}
    return None


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
    ns = min(a.cases, 400)
    t = Table(title=f"what-if sweep speed: full training estimates per second ({a.cases} grid cases, {ns} "
                    f"otherwise; best of {a.repeat}, one CPU core)", title_justify="left")
    for c in ("model", "grid", "impossible", "estimate() per call", "batch sweep", "batch, no fast path",
              "new seq/image each"):
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
        wb = from_dict(batches(m, ns))
        dt_batch = best(lambda: evaluate(wb), a.repeat)
        fast = fastpath.train_fast
        fastpath.train_fast = lambda r: None
        try:
            dt_slow = best(lambda: evaluate(wb), a.repeat)
        finally:
            fastpath.train_fast = fast
        tree_doc = new_trees(m, ns)
        if tree_doc is not None:
            wt = from_dict(tree_doc)
            dt_tree = best(lambda: evaluate(wt), a.repeat)
            trees = f"{wt.n_cases / dt_tree:,.0f}"
        else:
            trees = "-"
        t.add_row(m, f"{n_grid / dt:,.0f}", f"{bad / n:.0%}", f"{len(sub) / dt_call:,.0f}", f"{ns / dt_batch:,.0f}",
                  f"{ns / dt_slow:,.0f}", trees)
    Console(width=max(Console().width, 132)).print(t)


if __name__ == "__main__":
    main()
