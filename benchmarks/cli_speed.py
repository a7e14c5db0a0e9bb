"""CLI wall time: one estimate of gpt3-175b vs bert-base, next to the bare
import of the dependencies. Repeated blocks are built once, so a 96-layer
model costs no more than a 12-layer one. Prints a table.

    python benchmarks/cli_speed.py [--repeat 5]
"""
import argparse
import statistics
import subprocess
import sys
import time

CASES = [
    ("python -c 'import click, pydantic, rich, yaml'", [sys.executable, "-c", "import click, pydantic, rich, yaml"]),
    ("costmodel --help", [sys.executable, "-m", "costmodel", "--help"]),
    ("costmodel estimate bert-base", [sys.executable, "-m", "costmodel", "estimate", "bert-base"]),
    ("costmodel estimate gpt3-175b", [sys.executable, "-m", "costmodel", "estimate", "gpt3-175b"]),
    ("costmodel estimate gpt3-175b --gpus 1536 --tp 8 --pp 12 ...",
     [sys.executable, "-m", "costmodel", "estimate", "gpt3-175b", "--gpus", "1536", "--tp", "8", "--pp", "12",
      "--batch", "1536", "--micro-batch", "1", "--seq", "2048", "--recompute", "full", "--tokens", "300e9"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    print(f"{'command':62} {'median s':>9} {'min s':>7}")
    for label, cmd in CASES:
        ts = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            ts.append(time.perf_counter() - t0)
        print(f"{label:62} {statistics.median(ts):9.3f} {min(ts):7.3f}")


if __name__ == "__main__":
    main()
