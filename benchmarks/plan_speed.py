"""How long `costmodel plan` takes, and how much of the space its bounds skip.

Run: python3 benchmarks/plan_speed.py   (prints a table; no assertions)

'brute force' is the number of (tp, pp, dp, micro-batch, flash, ZeRO, recompute)
layouts an exhaustive search would time; 'timed' is what the bounded search
actually evaluated with the engine. Each case runs in a fresh cache (cold).
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from costmodel.plan import plan  # noqa: E402

CASES = [
    # model, hardware, tokens, gpus_max, batch (None: plan's default)
    ("gpt2", "a100-80gb", 10e9, 64, None),
    ("gpt3-13b", "a100-80gb", 300e9, 512, 1024),
    ("llama-2-7b", "h100-sxm", 2e12, 1024, 1024),
    ("gpt3-175b", "a100-80gb", 300e9, 1536, 1536),
    ("gpt3-175b", "a100-80gb", 300e9, 4096, 1536),   # the acceptance case: must plan in seconds
]


def main():
    rows = []
    for model, hw, tokens, gmax, batch in CASES:
        t, c = time.perf_counter(), time.process_time()
        res = plan(model, hw, tokens, gpus_max=gmax, batch=batch)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        s = res["stats"]
        brute = s["families"] * 4 * 3
        best = res["front"][0] if res["front"] else None
        rows.append((model, hw, f"{gmax}", f"{res['batch']}", f"{s['families']:,}", f"{brute:,}",
                     f"{s['evaluated']:,}", f"{s['bounded_out']:,}", f"{len(res['front'])}",
                     f"{best.gpus} ({best.dp}x{best.tp}x{best.pp})" if best else "-", f"{wall:.2f}", f"{cpu:.2f}"))
    head = ("model", "hardware", "gpus-max", "batch", "families", "brute force", "timed", "bounded out",
            "front", "fastest layout", "wall s", "cpu s")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


if __name__ == "__main__":
    main()
