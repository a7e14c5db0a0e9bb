#!/usr/bin/env python
"""Benchmark the exactness check (layer 1 of `costmodel validate`): for every
shipped model at its small case (costmodel.validate.exact.small_case), time
building the torch model + one training forward/backward under the FLOP
counter and the saved-tensor hooks, and print what was checked.

    python benchmarks/validate_exact.py [MODEL ...]

Needs torch (pip install 'costmodel[validate]'). Prints a table; asserts nothing.
"""
from __future__ import annotations

import sys
import time


def main(argv):
    from costmodel.catalog import load_model, model_names
    from costmodel.validate.exact import check, small_case
    names = argv or list(model_names())
    print(f"{'model':20s} {'device':6s} {'seconds':>8s} {'params':>15s} {'fwd+bwd FLOPs':>15s} "
          f"{'saved bytes':>14s} {'known gap':>12s} {'exact':>6s}")
    total = 0.0
    for n in names:
        spec = load_model(n)
        case = small_case(spec)
        t = time.perf_counter()
        r = check(spec, batch=case.get("batch", 1), seq=case.get("seq"), target_seq=case.get("target_seq"),
                  image=case.get("image"), overrides=case["overrides"] or None, device=case["device"])
        dt = time.perf_counter() - t
        total += dt
        print(f"{n:20s} {r.device:6s} {dt:8.2f} {r.params_torch:15,d} {r.fwdbwd_flops_torch:15.4g} "
              f"{r.saved_torch or 0:14,.0f} {r.explained:12,.0f} {'yes' if r.ok else 'NO':>6s}")
    print(f"{'total':20s} {'':6s} {total:8.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
