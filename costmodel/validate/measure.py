"""Layer 2 of validation: measure real time and memory with torch.

``costmodel measure`` runs two kinds of scenarios and records them as JSON
(validation/<device>/<date>.json):

* single ops -- matmul over a grid of shapes, attention (eager and
  ``F.scaled_dot_product_attention``), LayerNorm, GELU, softmax, conv2d:
  forward time per call; and the parameter update of one tensor at several
  sizes: an AdamW step (torch's default implementation on the device) and
  ``grad.zero_()`` + ``grad += new`` (zero_grad(set_to_none=False) and
  backward's accumulation). Each row names the engine ops that model it
  (kind + dims) so ``costmodel validate`` can predict it, and calibration
  fits efficiency curves from these rows only;
* whole steps -- a training step (forward + backward + AdamW) or an inference
  forward of a shipped model, built by ``torch_build`` from its YAML spec:
  wall time per step, kernel time per op class (torch.profiler), and peak memory.

Timing: ``warmup`` untimed calls, then ``iters`` timed calls (CUDA events on
a GPU; on the CPU with one thread ``time.thread_time``, the thread's CPU
time, else ``time.perf_counter``); ``time_s`` is the minimum, as
interference from other processes only ever adds time (the advice of
Python's ``timeit``), ``time_median_s`` the median; each row records the
host's 1-minute load average before and after.
Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU (after
``reset_peak_memory_stats``); on the CPU the profiler's memory timeline
(``profile_memory=True``): bytes of tensors alive at the start that the step
touches, plus the peak of those created during it.

Needs torch, click, rich, pyyaml and pydantic only.
"""
from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

SCHEMA = "costmodel.validation/1"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# --- device ---------------------------------------------------------------------
def pick_device(name: str = "auto") -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def device_info(device: str) -> dict:
    info = {"torch": torch.__version__.split("+")[0], "cuda": torch.version.cuda, "python": platform.python_version(),
            "threads": torch.get_num_threads()}
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        prop = torch.cuda.get_device_properties(0)
        driver = None
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
        if driver is None:
            try:
                v = torch._C._cuda_getDriverVersion()
                driver = f"CUDA driver API {v // 1000}.{(v % 1000) // 10}"
            except Exception:   # noqa: BLE001 -- best effort
                driver = None
        info.update(name=name, kind="gpu", slug=slug(name), driver=driver,
                    memory_bytes=prop.total_memory, multiprocessors=prop.multi_processor_count,
                    cudnn=torch.backends.cudnn.version())
    else:
        name = _cpu_name()
        info.update(name=name, kind="cpu", slug="cpu-" + slug(name).replace("-processor", ""), driver=None)
    return info


def default_hardware(info: dict) -> str | None:
    """The hardware YAML that describes this device: hardware/cpu-host.yaml for
    the CPU; for a GPU, a built-in name whose tokens all occur in the device name."""
    if info["kind"] == "cpu":
        return "cpu-host"
    from ..catalog import hardware_names
    dev = slug(info["name"]).split("-")
    names = list(hardware_names())
    for strict in (True, False):      # first with memory-size tokens ("80gb"), then without
        best = None
        for n in names:
            toks = [t for t in n.split("-") if strict or not re.fullmatch(r"\d+gb", t)]
            if toks and all(t in dev for t in toks) and (best is None or len(toks) > len(best[1])):
                best = (n, toks)
        if best:
            return best[0]
    return None


# --- timing ------------------------------------------------------------------
def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def cpu_timer() -> tuple[Callable[[], float], str]:
    """With one compute thread, the CPU time of that thread (``time.thread_time``):
    time-slicing by other processes on a shared host does not count. With more
    threads, wall time (``time.perf_counter``), as thread CPU times would add up."""
    if torch.get_num_threads() == 1:
        return time.thread_time, "time.thread_time (CPU time of the single compute thread)"
    return time.perf_counter, "time.perf_counter (wall)"


def time_fn(fn: Callable, device: str, warmup: int, iters: int, wall: list | None = None) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    if device == "cuda":
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b) / 1e3)
    else:
        clock, _ = cpu_timer()
        for _ in range(iters):
            w, t = time.perf_counter(), clock()
            fn()
            out.append(clock() - t)
            if wall is not None:
                wall.append(time.perf_counter() - w)
    return out


_MATMUL = ("aten::mm", "aten::addmm", "aten::_addmm_activation", "aten::matmul", "aten::linear", "aten::baddbmm_",
           "aten::_scaled_mm")
_ATTN = ("aten::bmm", "aten::baddbmm", "scaled_dot_product", "flash", "efficient_attention", "cudnn_attention")
_CONV = ("conv", "cudnn_convolution", "mkldnn_convolution")


def op_class(op_name: str) -> str:
    """Engine op class of an aten op (the op that launched a kernel)."""
    n = op_name.lower()
    if any(k in n for k in _CONV):
        return "conv"
    if any(k in n for k in _ATTN):
        return "attention"
    if n in _MATMUL or n.startswith(("aten::mm", "aten::addmm")):
        return "matmul"
    return "elementwise"


def kernel_times(fn: Callable, device: str) -> dict:
    """Seconds of kernel (GPU) or operator self (CPU) time per op class, one call."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    out = {"matmul": 0.0, "attention": 0.0, "conv": 0.0, "elementwise": 0.0}
    for e in prof.events():
        if device == "cuda":
            t = getattr(e, "self_device_time_total", None)
            if t is None:
                t = getattr(e, "self_cuda_time_total", 0.0)
        else:
            t = e.self_cpu_time_total
        if t and e.name.startswith("aten::"):
            out[op_class(e.name)] += t / 1e6
    return out


def peak_memory(fn: Callable, device: str) -> tuple[float | None, str]:
    """(peak bytes during one call, how it was measured)."""
    if device == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        fn()
        sync(device)
        return float(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import Action
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            fn()
        cur = peak = 0
        for _, action, _, size in prof._memory_profile().timeline:
            if action in (Action.PREEXISTING, Action.CREATE):
                cur += size
            elif action == Action.DESTROY:
                cur -= size
            peak = max(peak, cur)
        return float(peak), "torch.profiler memory timeline (tensors the step touches: alive at start + created)"
    except Exception as e:   # noqa: BLE001 -- private profiler API: record why instead of failing the run
        return None, f"unavailable: {type(e).__name__}: {e}"


# --- scenarios ----------------------------------------------------------------------
@dataclass
class Scenario:
    id: str
    category: str                # single_op | train_step | inference
    setup: Callable              # () -> (callable, row fields)
    meta: dict = field(default_factory=dict)


def _single(id_, op_name, klass, dtype, engine_ops, make_fn, **shape):
    return Scenario(id_, "single_op", lambda: (make_fn(), {}), dict(op=op_name, op_class=klass, dtype=dtype, shape=shape,
                                                    engine_ops=engine_ops))


def single_op_scenarios(device: str, dtypes: list[str], quick: bool) -> list[Scenario]:
    out: list[Scenario] = []

    def t(*shape, dt, grad=False):
        return torch.randn(*shape, device=device, dtype=DTYPES[dt], requires_grad=grad)

    if quick:
        mm = [(64, 64, 64), (128, 128, 128), (256, 256, 256), (512, 512, 512), (1024, 1024, 1024),
              (2048, 2048, 2048), (128, 3072, 768), (128, 768, 3072), (512, 2304, 768), (64, 50257, 768)]
        attn = [(1, 12, 64, 64), (1, 12, 128, 64), (1, 12, 256, 64), (2, 12, 512, 64)]
        rows = [(128, 768), (512, 768), (2048, 1024), (8192, 1024)]
        ew = [2 ** 14, 2 ** 17, 2 ** 20, 2 ** 22, 2 ** 24]
        sm = [(1536, 128), (3072, 256), (6144, 512)]
        upd = [2 ** 14, 2 ** 17, 2 ** 20, 2 ** 22, 2 ** 24, 2 ** 26]
        convs = [(1, 3, 224, 64, 7, 2, 3), (1, 64, 56, 64, 3, 1, 1), (1, 64, 56, 256, 1, 1, 0),
                 (1, 128, 28, 128, 3, 1, 1), (1, 256, 14, 256, 3, 1, 1), (1, 512, 7, 2048, 1, 1, 0),
                 (2, 3, 224, 768, 16, 16, 0)]
    else:
        mm = [(n, n, n) for n in (256, 512, 1024, 2048, 4096, 8192)] + [
            (4096, 3072, 768), (4096, 768, 3072), (8192, 4096, 1024), (8192, 1024, 4096), (16384, 2304, 768),
            (8192, 50257, 768), (2048, 11008, 4096), (512, 512, 4096)]
        attn = [(8, 12, 512, 64), (8, 16, 1024, 64), (4, 16, 2048, 64), (32, 12, 197, 64), (2, 32, 4096, 128)]
        rows = [(4096, 768), (16384, 1024), (65536, 1024), (8192, 4096)]
        ew = [2 ** 16, 2 ** 20, 2 ** 24, 2 ** 26, 2 ** 28]
        sm = [(8 * 12 * 512, 512), (8 * 16 * 1024, 1024), (4 * 16 * 2048, 2048)]
        upd = [2 ** 16, 2 ** 20, 2 ** 22, 2 ** 24, 2 ** 26, 2 ** 28]
        convs = [(32, 3, 224, 64, 7, 2, 3), (32, 64, 56, 64, 3, 1, 1), (32, 64, 56, 256, 1, 1, 0),
                 (32, 128, 28, 128, 3, 1, 1), (32, 256, 14, 256, 3, 1, 1), (32, 512, 7, 512, 3, 1, 1),
                 (32, 512, 7, 2048, 1, 1, 0), (32, 3, 224, 768, 16, 16, 0)]
    for dt in dtypes:
        for m, n, k in mm:
            def mk(m=m, n=n, k=k, dt=dt):
                a, b = t(m, k, dt=dt), t(k, n, dt=dt)
                return lambda: a @ b
            out.append(_single(f"matmul/{dt}/{m}x{n}x{k}", "matmul", "matmul", dt,
                               [{"kind": "linear", "dims": dict(tokens=m, d_in=k, d_out=n, bias=False)}], mk,
                               m=m, n=n, k=k))
        for b, h, s, dh in attn:
            eager_ops = [{"kind": "bmm", "dims": dict(batch=b * h, m=s, k=dh, n=s)},
                         {"kind": "scale", "dims": dict(elements=b * h * s * s)},
                         {"kind": "softmax", "dims": dict(rows=b * h * s, cols=s)},
                         {"kind": "bmm", "dims": dict(batch=b * h, m=s, k=s, n=dh)}]

            def mk_e(b=b, h=h, s=s, dh=dh, dt=dt):
                q, k_, v = t(b, h, s, dh, dt=dt), t(b, h, s, dh, dt=dt), t(b, h, s, dh, dt=dt)
                sc = 1.0 / math.sqrt(dh)
                return lambda: torch.matmul(F.softmax(torch.matmul(q, k_.transpose(-1, -2)) * sc, dim=-1), v)

            def mk_s(b=b, h=h, s=s, dh=dh, dt=dt):
                q, k_, v = t(b, h, s, dh, dt=dt), t(b, h, s, dh, dt=dt), t(b, h, s, dh, dt=dt)
                return lambda: F.scaled_dot_product_attention(q, k_, v)
            out.append(_single(f"attention_eager/{dt}/b{b}h{h}s{s}d{dh}", "attention_eager", "attention", dt,
                               eager_ops, mk_e, batch=b, heads=h, seq=s, d_head=dh))
            out.append(_single(f"attention_sdpa/{dt}/b{b}h{h}s{s}d{dh}", "attention_sdpa", "attention", dt,
                               [{"kind": "flash_attention", "dims": dict(batch=b, heads=h, kv_heads=h, q_len=s,
                                                                        kv_len=s, d_head=dh)}], mk_s,
                               batch=b, heads=h, seq=s, d_head=dh))
        for r, d in rows:
            def mk_ln(r=r, d=d, dt=dt):
                x = t(r, d, dt=dt)
                w, bb = torch.ones(d, device=device, dtype=DTYPES[dt]), torch.zeros(d, device=device, dtype=DTYPES[dt])
                return lambda: F.layer_norm(x, (d,), w, bb)
            out.append(_single(f"layernorm/{dt}/{r}x{d}", "layernorm", "elementwise", dt,
                               [{"kind": "norm", "dims": dict(rows=r, dim=d)}], mk_ln, rows=r, dim=d))
        for e in ew:
            def mk_g(e=e, dt=dt):
                x = t(e, dt=dt)
                return lambda: F.gelu(x)
            out.append(_single(f"gelu/{dt}/{e}", "gelu", "elementwise", dt,
                               [{"kind": "activation", "dims": dict(elements=e, fn="gelu")}], mk_g, elements=e))
        for r, c in sm:
            def mk_sm(r=r, c=c, dt=dt):
                x = t(r, c, dt=dt)
                return lambda: F.softmax(x, dim=-1)
            out.append(_single(f"softmax/{dt}/{r}x{c}", "softmax", "elementwise", dt,
                               [{"kind": "softmax", "dims": dict(rows=r, cols=c)}], mk_sm, rows=r, cols=c))
        for n, c, hw, o, k, s, pd in convs:
            def mk_c(n=n, c=c, hw=hw, o=o, k=k, s=s, pd=pd, dt=dt):
                x = t(n, c, hw, hw, dt=dt)
                w = t(o, c, k, k, dt=dt)
                return lambda: F.conv2d(x, w, stride=s, padding=pd)
            out.append(_single(f"conv/{dt}/n{n}c{c}h{hw}o{o}k{k}s{s}", "conv2d", "conv", dt,
                               [{"kind": "conv2d", "dims": dict(n=n, c_in=c, h=hw, w=hw, c_out=o, kernel=k,
                                                               stride=s, padding=pd, bias=False)}], mk_c,
                               n=n, c_in=c, hw=hw, c_out=o, kernel=k, stride=s, padding=pd))
        # the parameter update, one tensor of e elements: AdamW's step (torch's default
        # implementation on this device) and zero_grad(set_to_none=False)'s fill +
        # backward's in-place accumulation grad += new_grad
        for e in upd:
            def mk_opt(e=e, dt=dt):
                p = torch.nn.Parameter(t(e, dt=dt))
                p.grad = t(e, dt=dt)
                return torch.optim.AdamW([p], lr=1e-5).step
            impl = optimizer_impl(device)
            out.append(_single_update(f"adamw/{dt}/{e}", "adamw_step", dt, mk_opt,
                                      dict(optimizer="adamw", impl=impl, zero_grad="set_to_none", elements=e),
                                      elements=e))

            def mk_zero(e=e, dt=dt):
                g, new = t(e, dt=dt), t(e, dt=dt)

                def fn():
                    g.zero_()
                    g.add_(new)
                return fn
            out.append(_single_update(f"grad_zero_accumulate/{dt}/{e}", "grad_zero_accumulate", dt, mk_zero,
                                      dict(optimizer=None, impl=impl, zero_grad="zero", elements=e), elements=e))
    return out


def _single_update(id_, op_name, dtype, make_fn, update: dict, **shape):
    """A single-op row of the parameter update (op class ``optimizer``); the
    engine predicts it with ``engine.update_time`` from ``engine_update``."""
    return Scenario(id_, "single_op", lambda: (make_fn(), {}),
                    dict(op=op_name, op_class="optimizer", dtype=dtype, shape=shape, engine_ops=[],
                         engine_update=update))


def optimizer_impl(device: str) -> str:
    """The implementation torch.optim.AdamW picks by default for tensors on ``device``."""
    try:
        from torch.optim.optimizer import _default_to_fused_or_foreach
        p = torch.zeros(1, device=device, requires_grad=True)
        fused, foreach = _default_to_fused_or_foreach([p], differentiable=False, use_fused=False)
        return "fused" if fused else "foreach" if foreach else "single-tensor"
    except Exception:   # noqa: BLE001 -- private helper: fall back to the documented defaults
        return "foreach" if device == "cuda" else "single-tensor"


# (model, seq, image, train batches, inference batches): the shipped models named by the issue
STEP_MODELS_GPU = [("bert-base", 512, None, (8, 32), (8, 32)), ("gpt2", 512, None, (8, 16), (8, 32)),
                   ("gpt2-medium", 512, None, (4, 16), (8, 32)), ("resnet50", None, 224, (32, 128), (32, 128)),
                   ("vit-b16", None, 224, (32, 128), (32, 128)), ("t5-small", 512, None, (8, 32), (8, 32))]
STEP_MODELS_QUICK = [("bert-base", 128, None, (1,), (2,)), ("gpt2", 128, None, (1,), (2,)),
                     ("gpt2-medium", 64, None, (1,), (1,)), ("resnet50", None, 224, (1,), (2,)),
                     ("vit-b16", None, 224, (1,), (1,)), ("t5-small", 128, None, (1,), (2,))]


def step_scenarios(device: str, dtypes: list[str], quick: bool, models=None) -> list[Scenario]:
    out = []
    for name, seq, image, train_b, infer_b in (STEP_MODELS_QUICK if quick else STEP_MODELS_GPU):
        if models and name not in models:
            continue
        for dt in dtypes:
            for mode, batches in (("train", train_b), ("inference", infer_b)):
                for b in batches:
                    shape = f"s{seq}" if seq else f"i{image}"
                    out.append(Scenario(f"{mode}/{name}/{dt}/b{b}/{shape}",
                                        "train_step" if mode == "train" else "inference",
                                        _model_setup(name, mode, dt, b, seq, image, device),
                                        dict(model=name, mode=mode, dtype=dt, batch=b, seq=seq, image=image)))
    return out


def _model_setup(name, mode, dt, batch, seq, image, device):
    def setup():
        from ..catalog import load_model
        from .torch_build import build_module
        spec = load_model(name)
        torch.manual_seed(0)
        with torch.device(device):
            m = build_module(spec)
        m = m.to(dtype=DTYPES[dt])
        inputs = m.make_inputs(batch, seq or 0, 0, image or 0, device=device, dtype=DTYPES[dt])
        if mode == "train":
            m.train()
            # gradient buffers persist (set_to_none=False), as the engine's memory ledger assumes
            opt = torch.optim.AdamW(m.parameters(), lr=1e-5)

            def step():
                opt.zero_grad(set_to_none=False)
                m(**inputs).backward()
                opt.step()
            extra = {"optimizer": "AdamW (torch defaults: foreach on CUDA, single-tensor on CPU)",
                     "optimizer_impl": optimizer_impl(device), "zero_grad": "set_to_none=False"}
        else:
            m.eval()

            def step():
                with torch.no_grad():
                    m(**inputs)
            extra = {}
        nparams = sum(p.numel() for p in m.parameters())
        return step, dict(params=nparams, **extra)
    return setup


# --- run ------------------------------------------------------------------------
def run(*, quick: bool, device: str = "auto", dtypes: list[str] | None = None, out_dir: str = "validation",
        models=None, singles: bool = True, steps: bool = True, budget_s: float | None = None,
        warmup: int | None = None, iters: int | None = None, hardware: str | None = None,
        progress: bool = True, command: str = "") -> tuple[str, dict]:
    device = pick_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        from ..errors import CostModelError
        raise CostModelError("--device cuda: torch sees no CUDA device (expected a GPU build of torch on a GPU host)")
    dtypes = dtypes or (["fp32"] if device == "cpu" else ["fp32", "bf16"])
    warmup = warmup if warmup is not None else (1 if quick else 3)
    iters = iters if iters is not None else (3 if quick else 10)
    budget_s = budget_s if budget_s is not None else (600.0 if quick else 450.0)
    if device == "cuda":
        # fp32 means fp32: no TF32 in matmuls (torch default) nor in cuDNN convolutions (default on)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
    info = device_info(device)
    hw = hardware or default_hardware(info)
    scen = (single_op_scenarios(device, dtypes, quick) if singles else []) + \
        (step_scenarios(device, dtypes, quick, models) if steps else [])
    rows = []
    t0 = time.perf_counter()
    bar = _progress(progress)
    with bar:
        task = bar.add_task(f"measuring on {info['name']}", total=len(scen))
        for sc in scen:
            bar.update(task, description=f"{sc.id:48s}")
            row = {"id": sc.id, "category": sc.category, **sc.meta}
            if time.perf_counter() - t0 > budget_s:
                row["skipped"] = f"time budget {budget_s:.0f} s spent"
                rows.append(row)
                bar.advance(task)
                continue
            try:
                fn, fields = sc.setup()
                row.update(fields)
                row["load_1m_before"] = _load()
                wall: list = []
                ts = time_fn(fn, device, warmup if sc.category != "single_op" else warmup + 2,
                             iters if sc.category != "single_op" else max(iters, 10), wall)
                # the minimum: interference (other processes, clocks) only ever adds time (timeit's advice)
                row["time_s"] = min(ts)
                row["time_median_s"] = statistics.median(ts)
                row["times_s"] = ts
                if wall:
                    row["times_wall_s"] = wall
                if sc.category != "single_op":
                    row["kernel_time_by_class_s"] = kernel_times(fn, device)
                    row["peak_memory_bytes"], row["memory_method"] = peak_memory(fn, device)
                row["load_1m_after"] = _load()
                del fn
            except Exception as e:   # noqa: BLE001 -- one failing scenario must not lose the rest
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                if device == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            bar.advance(task)
            gc.collect()      # free this scenario's model before the next one's peak is measured
            if device == "cuda":
                torch.cuda.empty_cache()
    now = _dt.datetime.now(_dt.timezone.utc)
    doc = {"schema": SCHEMA, "device": info, "hardware": hw, "date": now.date().isoformat(),
           "created": now.isoformat(timespec="seconds"), "command": command, "quick": quick,
           "settings": {"warmup": warmup, "iters": iters, "dtypes": dtypes, "budget_s": budget_s,
                        "timer": "CUDA events" if device == "cuda" else cpu_timer()[1],
                        "time_s": "minimum over the timed calls (time_median_s: their median)",
                        "kernel_time_by_class_s": "one profiled call: self time of each aten op, GPU kernels on "
                                                  "a GPU, wall-clock CPU time on the CPU, by engine op class",
                        "cpu_count": os.cpu_count(), "load_1m_start": _load(),
                        "tf32": False if device == "cuda" else None,
                        "bf16": "pure bf16: parameters, gradients and AdamW states in bf16",
                        "wall_s": round(time.perf_counter() - t0, 1)},
           "rows": rows}
    os.makedirs(os.path.join(out_dir, info["slug"]), exist_ok=True)
    path = os.path.join(out_dir, info["slug"], f"{doc['date']}{'-quick' if quick else ''}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path, doc


def _load() -> float | None:
    """1-minute load average of the host (how busy other processes kept it)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled, transient=False)
