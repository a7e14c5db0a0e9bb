"""Published reference runs, reproduced by costmodel.

    python3 benchmarks/published_runs.py

Prints one table: each published figure, where it comes from, what costmodel
computes with its honest defaults (every ``hardware.efficiency`` = 1.0: the
ideal roofline plus modelled communication and pipeline bubble, i.e. a lower
bound on time), what it computes under one stated efficiency assumption, the
error of the latter, and the efficiency that would reproduce the figure
exactly.

The assumption: matmul and attention kernels run at a fraction E of peak,
E solved once (bisection) so that the engine reproduces ONE anchor run --
Narayanan et al. 2021 Table 2, GPT-3 175B on 1536 A100s at 141 TFLOP/s per
GPU -- and then applied unchanged to every other run (other sizes, layouts,
the Korthikanti et al. 2022 runs, PaLM on TPU v4). Count rows (parameters,
FLOPs) need no assumption; their "stated assumption" column is empty.

A second table: memory per device of the Korthikanti et al. 2022 Table 5
layouts, without recomputation, with full recomputation and with selective
recomputation + sequence parallelism, in GB (1e9 bytes) and GiB (2^30 bytes).

Sources and assumptions row by row: docs/published_runs.md. The published
numbers are checked against the engine in tests/test_published_runs.py.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pydantic import TypeAdapter  # noqa: E402

from costmodel.engine import count_params, estimate  # noqa: E402
from costmodel.specs.model import ModelSpec  # noqa: E402

A100, TPU = "a100-80gb", "tpu-v4"
A100_PEAK, TPU_PEAK = 312e12, 275e12         # dense bf16, datasheets (hardware/*.yaml)
SEQ = 2048
_SPEC = TypeAdapter(ModelSpec)


# --- models ---------------------------------------------------------------------------------------------------
def megatron_gpt(name: str, layers: int, hidden: int, heads: int, vocab: int = 51200):
    """The GPT of Narayanan et al. 2021 / Korthikanti et al. 2022: GPT-2 architecture (learned positions,
    biases, pre-LayerNorm, GELU, d_ff = 4h, tied embeddings), vocabulary 51,200, sequence 2048."""
    return _SPEC.validate_python(dict(
        name=name, arch="transformer", structure="decoder", layers=layers, d_model=hidden, heads=heads,
        d_ff=4 * hidden, vocab_size=vocab, max_positions=SEQ, position="learned", activation="gelu",
        tied_embeddings=True, dropout=0.1))


def chinchilla():
    """Hoffmann et al. 2022 Table 4: 80 layers, 64 heads of 128, d_model 8192, (Gopher family) d_ff = 4 d,
    vocabulary 32,000, RMSNorm. Not exact (hence inline, not a models/*.yaml): the Transformer-XL relative
    position encoding (Dai et al. 2019) has a d x d projection W_r per layer (80 x 8192^2 = 5.37B
    parameters) that no schema field models; biases: none assumed; embeddings untied (not stated)."""
    return _SPEC.validate_python(dict(
        name="chinchilla-70b (inline, approx.)", arch="transformer", structure="decoder", layers=80, d_model=8192,
        heads=64, d_ff=32768, vocab_size=32000, max_positions=SEQ, position="none", norm="rmsnorm",
        norm_bias=False, activation="gelu", biases=dict(qkv=False, attn_out=False, ffn=False),
        tied_embeddings=False, dropout=0.0))


# --- published formulas (written out independently of the engine) ----------------------------------------------
def megatron_iteration_flops(B, s, l, h, V):
    """Narayanan et al. 2021 sec. 5.1, eq. (3): FLOPs per iteration with full recomputation (4 passes)."""
    return 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h))


def korthikanti_model_flops(B, s, l, h, V):
    """Korthikanti et al. 2022 sec. 6.3 / app. A: model FLOPs per iteration (no recomputation, 3 passes)."""
    return 72 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h))


def palm_flops_per_token(N, L, H, Q, T):
    """Chowdhery et al. 2022 app. B: model FLOPs per token 6N + 12 L H Q T."""
    return 6 * N + 12 * L * H * Q * T


def eff(e: float) -> dict:
    return {"hardware.efficiency.matmul": e, "hardware.efficiency.attention": e}


def solve(f, target: float, lo: float = 0.02, hi: float = 1.0, iters: int = 32):
    """The efficiency e in [lo, hi] with f(e) = target (f monotonic in e); None when out of range."""
    flo, fhi = f(lo), f(hi)
    if not (min(flo, fhi) <= target <= max(flo, fhi)):
        return None
    rising = fhi > flo
    for _ in range(iters):
        mid = (lo + hi) / 2
        if (f(mid) < target) == rising:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# --- the runs -------------------------------------------------------------------------------------------------------
# Narayanan et al. 2021 Table 1: (params B, heads, hidden, layers, TP, PP, GPUs, batch, TFLOP/s per GPU)
NARAYANAN_T1 = [(1.7, 24, 2304, 24, 1, 1, 32, 512, 137), (3.6, 32, 3072, 30, 2, 1, 64, 512, 138),
                (7.5, 32, 4096, 36, 4, 1, 128, 512, 142), (18.4, 48, 6144, 40, 8, 1, 256, 1024, 135),
                (39.1, 64, 8192, 48, 8, 2, 512, 1536, 138), (76.1, 80, 10240, 60, 8, 4, 1024, 1792, 140),
                (145.6, 96, 12288, 80, 8, 8, 1536, 2304, 148), (310.1, 128, 16384, 96, 8, 16, 1920, 2160, 155),
                (529.6, 128, 20480, 105, 8, 35, 2520, 2520, 163), (1008.0, 160, 25600, 128, 8, 64, 3072, 3072, 163)]
# Korthikanti et al. 2022 Table 3 layouts + Table 5 results:
# (name, layers, hidden, heads, TP, PP, batch, micro-batch, interleave*, full s, selective+SP s, MFU %, HFU %)
# * interleaving is not printed in the paper; the values Calculon's llm-validation uses for these runs
#   (calculon-ai/calculon validation/seqsel/tab5/*.json).
KORTHIKANTI = [("22B", 48, 6144, 64, 8, 1, 4, 4, 1, 1.42, 1.10, 41.5, 43.7),
               ("175B", 96, 12288, 96, 8, 8, 64, 1, 3, 18.13, 13.75, 51.4, 52.8),
               ("530B", 105, 20480, 128, 8, 35, 280, 1, 3, 49.05, 37.83, 56.0, 57.0),
               ("1T", 128, 25600, 160, 8, 64, 512, 1, 1, 94.42, 71.49, 56.3, 57.0)]
MEGATRON = dict(micro_batch=1, recompute="full", seq=SEQ)   # bf16 gradients, as tests/test_economics.py
PALM_WL = dict(batch=2048, seq=SEQ, gpus=6144, tp=12, zero=3, sequence_parallel=True, recompute="full")


class Row:
    def __init__(self, run, source, published, fmt, default=None, assumed=None, needed=None, note=""):
        self.run, self.source, self.published, self.fmt = run, source, published, fmt
        self.default, self.assumed, self.needed, self.note = default, assumed, needed, note

    @property
    def error(self):
        v = self.assumed if self.assumed is not None else self.default
        return None if v is None else v / self.published - 1


def _f(fmt, v):
    return "-" if v is None else fmt.format(v)


def gpt3_rows():
    r = estimate("gpt3-175b", A100, dict(batch=1536, tokens=300e9))
    return [Row("GPT-3 175B training compute (6ND)", "Brown+ 2020 T.D.1", 3.14e23, "{:.3g}",
                r["six_nd_train_flops"], note=f"op-level count {r['train_flops']:.3g} (+attention, elementwise)")]


def narayanan_rows(E):
    rows = []
    # parameter count and FLOP formula of the largest Table 1 model
    P, a, h, l, tp, pp, n, B, X = NARAYANAN_T1[-1]
    spec = megatron_gpt("megatron-1t", l, h, a)
    rows.append(Row("Megatron 1T: parameters (B)", "Narayanan+ 2021 T.1", P, "{:.1f}", count_params(spec) / 1e9))
    r = estimate(spec, A100, dict(batch=B, gpus=n, tp=tp, pp=pp, **MEGATRON))
    rows.append(Row("Megatron 1T: FLOPs/iteration, eq. (3)", "Narayanan+ 2021 s.5.1",
                    megatron_iteration_flops(B, SEQ, l, h, 51200), "{:.4g}", r["hardware_flops"],
                    note="engine: op-level count with full recompute"))
    # Table 1 throughput, every row
    for P, a, h, l, tp, pp, n, B, X in NARAYANAN_T1:
        spec = megatron_gpt(f"megatron-{P}b", l, h, a)
        F = megatron_iteration_flops(B, SEQ, l, h, 51200)
        wl = dict(batch=B, gpus=n, tp=tp, pp=pp, **MEGATRON)

        def tflops(e, spec=spec, wl=wl, F=F, n=n):
            return F / estimate(spec, A100, wl, overrides=eff(e))["step_time_s"] / n / 1e12
        rows.append(Row(f"Megatron {P:g}B, {n} GPUs (t{tp} p{pp}): TFLOP/s/GPU", "Narayanan+ 2021 T.1", X, "{:.1f}",
                        tflops(1.0), tflops(E), solve(tflops, X), note="micro-batch 1, no interleave (assumed)"))
    # Table 2: PTD-P (TP 8 x PP 12 for 175B, 8 x 35 for 530B) and ZeRO-3, 300B tokens
    g175 = "gpt3-175b"
    s530 = megatron_gpt("megatron-530b", 105, 20480, 128)
    t2 = [("PTD-P 175B, 1536 GPUs: days", g175, 1536, dict(batch=1536, tp=8, pp=12), 23, "anchor: E from 141 TFLOP/s"),
          ("PTD-P 175B, 768 GPUs: days", g175, 768, dict(batch=1536, tp=8, pp=12), 43, "paper: 149 TFLOP/s"),
          ("PTD-P 175B, 384 GPUs: days", g175, 384, dict(batch=1536, tp=8, pp=12), 84, "paper: 153 TFLOP/s"),
          ("PTD-P 530B, 2240 GPUs: days", s530, 2240, dict(batch=2240, tp=8, pp=35), 42, "paper: 159 TFLOP/s"),
          ("ZeRO-3 175B, 1536 GPUs: days", g175, 1536, dict(batch=1536, zero=3), 74, "llm-analysis: 22.5 days"),
          ("ZeRO-3 175B, 384 GPUs, mb 4: days", g175, 384, dict(batch=1536, zero=3, micro_batch=4), 90,
           "paper: 144 TFLOP/s")]
    for label, spec, n, kw, days, note in t2:
        wl = {**MEGATRON, **kw, "gpus": n, "tokens": 300e9}

        def d(e, spec=spec, wl=wl):
            return estimate(spec, A100, wl, overrides=eff(e))["train_time_s"] / 86400
        rows.append(Row(label, "Narayanan+ 2021 T.2", days, "{:.1f}", d(1.0), d(E), solve(d, days), note=note))
    # the paper's own estimate (8TP/(nX), sec. 5.1): the 1T model on 3072 GPUs for 450B tokens
    P, a, h, l, tp, pp, n, B, X = NARAYANAN_T1[-1]
    spec, wl = megatron_gpt("megatron-1t", l, h, a), dict(batch=B, gpus=n, tp=tp, pp=pp, tokens=450e9, **MEGATRON)

    def d1t(e):
        return estimate(spec, A100, wl, overrides=eff(e))["train_time_s"] / 86400
    rows.append(Row("Megatron 1T, 3072 GPUs, 450B tokens: days", "Narayanan+ 2021 s.5.1", 84, "{:.1f}",
                    d1t(1.0), d1t(E), solve(d1t, 84), note="paper's estimate 8TP/(nX), X = 163"))
    return rows


def korthikanti_rows(E):
    rows, mfu_rows, mem = [], [], []
    for name, l, h, a, tp, pp, B, mb, v, t_full, t_sel, mfu, hfu in KORTHIKANTI:
        spec = megatron_gpt(f"megatron-{name}", l, h, a)
        n = tp * pp
        base = dict(batch=B, micro_batch=mb, gpus=n, tp=tp, pp=pp, interleave=v, seq=SEQ)
        modes = {"full": dict(recompute="full"), "sel+SP": dict(recompute="selective", sequence_parallel=True)}
        for mode, pub in (("full", t_full), ("sel+SP", t_sel)):
            wl = {**base, **modes[mode]}

            def t(e, spec=spec, wl=wl):
                return estimate(spec, A100, wl, overrides=eff(e))["step_time_s"]
            rows.append(Row(f"Korthikanti {name} ({n} GPUs), {mode}: s/iteration", "Korthikanti+ 2022 T.5", pub,
                            "{:.2f}", t(1.0), t(E), solve(t, pub)))
        r = estimate(spec, A100, {**base, **modes["sel+SP"]})
        at = t_sel * n * A100_PEAK
        mfu_rows.append(Row(f"Korthikanti {name}: MFU % at the published {t_sel:.2f} s", "Korthikanti+ 2022 T.5", mfu,
                            "{:.2f}", 100 * r["model_flops"] / at,
                            note=f"paper's HFU {hfu}%; engine {100 * r['hardware_flops'] / at:.2f}%"))
        line = [name]
        for mode, kw in (("none", dict(recompute="none")), ("full", modes["full"]), ("sel+SP", modes["sel+SP"])):
            m = estimate(spec, A100, {**base, **kw})
            b = m["total_memory_bytes"]
            line.append(f"{b / 1e9:.1f} GB ({b / 2 ** 30:.1f} GiB) {'fits' if m['fits'] else 'DOES NOT FIT'}")
        mem.append(line)
    return rows, mfu_rows, mem


def palm_rows(E):
    s = "palm-540b"
    r = estimate(s, TPU, PALM_WL)
    tokens = PALM_WL["batch"] * SEQ
    norm_params = sum(c.count * c.op.params for c in r.ops if c.op.kind == "norm")
    per_token = r["model_flops"] / tokens
    rows = [Row("PaLM 540B: parameters (B)", "Chowdhery+ 2022 T.1", 540.35, "{:.4f}", r["params"] / 1e9,
                note=f"{(r['params'] - norm_params) / 1e9:.4f} without the norm scales"),
            Row("PaLM: model FLOPs/token, 6N + 12LHQT", "Chowdhery+ 2022 app.B",
                palm_flops_per_token(540.35e9, 118, 48, 256, SEQ), "{:.5g}", per_token,
                note="engine: matmul FLOPs fwd+bwd / tokens"),
            Row("PaLM: tokens/s that 46.2% MFU means (k)", "Chowdhery+ 2022 s.4.1", 238.3, "{:.1f}",
                0.462 * 6144 * TPU_PEAK / per_token / 1e3, note="6144 TPU v4 x 275 TFLOP/s")]

    def mfu(e):
        return 100 * estimate(s, TPU, PALM_WL, overrides=eff(e))["mfu"]
    rows.append(Row("PaLM 540B on 6144 TPU v4: MFU %", "Chowdhery+ 2022 T.3", 46.2, "{:.1f}", mfu(1.0), mfu(E),
                    solve(mfu, 46.2), note="tp 12 x dp 512 ZeRO-3, SP, full remat"))
    return rows


def chinchilla_rows():
    spec = chinchilla()
    r = estimate(spec, A100, dict(batch=1536, seq=SEQ, tokens=1.4e12))
    d = 8192
    return [Row("Chinchilla 70B: parameters (B)", "Hoffmann+ 2022 T.4", 70, "{:.2f}", r["params"] / 1e9,
                note=f"+ W_r 80 d^2 = {(r['params'] + 80 * d * d) / 1e9:.2f}B (not modelled)"),
            Row("Chinchilla, 1.4T tokens: training FLOPs", "Hoffmann+ 2022 T.3, s.4", 5.76e23, "{:.3g}",
                r["train_flops"], note=f"6ND with the engine's N: {r['six_nd_train_flops']:.3g}")]


def render(rows, E):
    head = ["run", "source", "published", "default (eff 1.0)", f"eff {E:.3f}", "error", "eff needed", "note"]
    body = []
    for x in rows:
        err = x.error
        body.append([x.run, x.source, _f(x.fmt, x.published), _f(x.fmt, x.default), _f(x.fmt, x.assumed),
                     "-" if err is None else f"{100 * err:+.1f}%", _f("{:.3f}", x.needed), x.note])
    return _table(head, body)


def _table(head, body):
    w = [max(len(str(r[i])) for r in [head] + body) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(r) for r in body])


def main():
    t0 = time.time()
    # the anchor: Narayanan et al. 2021 Table 2, 175B, 1536 GPUs, TP 8 x PP 12, batch 1536: 141 TFLOP/s per GPU
    F = megatron_iteration_flops(1536, SEQ, 96, 12288, 50257)
    anchor = dict(batch=1536, gpus=1536, tp=8, pp=12, **MEGATRON)

    def tflops(e):
        return F / estimate("gpt3-175b", A100, anchor, overrides=eff(e))["step_time_s"] / 1536 / 1e12
    E = solve(tflops, 141.0)
    rows = gpt3_rows()
    rows.append(Row("Anchor: PTD-P 175B, 1536 GPUs: TFLOP/s/GPU", "Narayanan+ 2021 T.2", 141, "{:.1f}",
                    tflops(1.0), tflops(E), E, note="E solved here, used below"))
    rows += narayanan_rows(E)
    k_rows, k_mfu, mem = korthikanti_rows(E)
    rows += k_rows + k_mfu + palm_rows(E) + chinchilla_rows()
    print(f"Published runs vs costmodel (A100 80GB SXM: 312 TFLOP/s bf16 dense; TPU v4: 275). Assumption: "
          f"matmul + attention efficiency E = {E:.3f}, solved from the anchor row; 'eff needed' reproduces the row.")
    print(render(rows, E))
    print()
    print("Memory per device, Korthikanti et al. 2022 Table 3 layouts (capacity 85.9 GB = 80 GiB; the paper ran "
          "selective + sequence parallel; Fig. 1: without recomputation none fits):")
    print(_table(["model", "no recompute", "full recompute", "selective + SP"], mem))
    print(f"\n{len(rows)} rows in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
