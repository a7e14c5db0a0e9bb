#!/usr/bin/env python
"""Generate tests/data/reference_cnn.json: parameters and matmul FLOPs of the
real torchvision CNNs that the shipped model specs mirror.

For every models/*.yaml with ``arch: cnn`` whose ``reference.library`` is
torchvision, build ``reference.config`` (e.g. ``torchvision.models.mobilenet_v2
(weights=None)``; parsed with ``ast``, never evaluated) on the CPU in train
mode and run one forward and one backward of ``loss = logits.sum()`` on a
1 x 3 x 224 x 224 input under ``torch.utils.flop_counter.FlopCounterMode``:

* ``params``: ``sum(p.numel() for p in model.parameters())``;
* ``forward_flops``: what FlopCounterMode counts in the forward (convolutions,
  addmm/mm of the linear layers, 2 FLOPs per multiply-accumulate; BN,
  activations, pooling, adds, the squeeze-excitation multiply are not counted);
* ``forward_backward_flops_flop_counter``: FlopCounterMode's total after the
  backward, as torch reports it;
* ``forward_backward_flops``: the same run counted with the weight-gradient
  term of grouped convolutions divided by ``groups``. torch's
  ``conv_backward_flop`` ignores its ``_groups`` argument (fixed upstream in
  pytorch/pytorch PR #183405), so for a groups=g conv it counts the weight
  gradient g times (a depthwise 3x3 conv over 960 channels: 960x). The
  correction is applied per call, from the shapes the counter sees, by
  wrapping torch's own formula (``custom_mapping``), not from the engine.

The image needs no gradient, so the first conv's input gradient is never
computed (engine: ``input_grad=False``). Also recorded, for information only
(not asserted): the bytes autograd saves (unique storages, parameters and
buffers excluded) in the real model on the CPU -- they differ from the
engine's GPU-kernel model by documented amounts (``F.dropout`` on the CPU keeps
a float noise tensor instead of a bool mask; torchvision's StochasticDepth
keeps a per-sample mask; see ``saved_notes``).

Environment used for the committed file: /work/venvs/tv (python 3.11, torch
2.14.1, torchvision 0.29.1). Usage:

  /work/venvs/tv/bin/python tests/data/make_reference_cnn.py [model ...]

(merges into the existing JSON, replacing entries of the same name).
"""
from __future__ import annotations

import ast
import glob
import json
import os
import sys

import torch
import torchvision
import yaml
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.flop_counter import conv_backward_flop as _registered

conv_backward_flop = getattr(_registered, "__wrapped__", _registered)   # the shape formula itself

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "reference_cnn.json")
aten = torch.ops.aten


def conv_backward_flop_grouped(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                               output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """torch's conv_backward_flop with the weight-gradient term divided by groups."""
    args = (grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding, groups)
    total = conv_backward_flop(*args, output_mask, out_shape)
    if groups > 1 and output_mask[1]:
        wgrad = conv_backward_flop(*args, [False, True, False], out_shape)
        total -= wgrad - wgrad // groups
    return total


def _by_op(fc) -> dict:
    return {str(k): int(v) for k, v in fc.get_flop_counts()["Global"].items()}


def saved_bytes(model, x) -> tuple[int, int]:
    """(bytes autograd saves in one forward, StochasticDepth calls with p > 0 in it)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    params |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: dict = {}
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in model.modules()
             if type(m).__name__ == "StochasticDepth" and m.p > 0]

    def pack(t):
        k = t.untyped_storage().data_ptr()
        if k not in params:
            seen[k] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    for h in hooks:
        h.remove()
    return sum(seen.values()), len(calls)


def measure(name: str, spec: dict) -> dict:
    ref = spec["reference"]
    call = ast.parse(ref["config"], mode="eval").body
    fn = getattr(torchvision.models, call.func.attr)
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    torch.manual_seed(0)
    model = fn(**kwargs).train()
    x = torch.randn(1, 3, 224, 224)
    out = {"name": name, "class": ref["class"], "constructor": ref["config"], "batch": 1, "image": 224,
           "params": sum(p.numel() for p in model.parameters())}
    with FlopCounterMode(display=False) as fc:
        y = model(x)
        out["forward_flops"] = int(fc.get_total_flops())
        out["by_op"] = _by_op(fc)
        y.sum().backward()
        out["forward_backward_flops_flop_counter"] = int(fc.get_total_flops())
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False, custom_mapping={aten.convolution_backward: conv_backward_flop_grouped}) as fc:
        y = model(x)
        assert int(fc.get_total_flops()) == out["forward_flops"]
        y.sum().backward()
        out["forward_backward_flops"] = int(fc.get_total_flops())
        out["by_op_forward_backward"] = _by_op(fc)
    model.zero_grad(set_to_none=True)
    out["saved_bytes_cpu"], out["stochastic_depth_masks"] = saved_bytes(model, x)
    out["torch"] = torch.__version__.split("+")[0]
    out["library"] = f"torchvision {torchvision.__version__.split('+')[0]}"
    out["notes"] = ("train mode, input 1x3x224x224 (no gradient), loss = logits.sum(); FlopCounterMode counts "
                    "convolution / addmm / mm at 2 FLOPs per multiply-accumulate; forward_backward_flops divides "
                    "the weight-gradient FLOPs of grouped convs by groups (torch conv_backward_flop ignores "
                    "groups, pytorch/pytorch PR #183405); forward_backward_flops_flop_counter is torch's raw total")
    mods = {type(m).__name__ for m in model.modules()}
    notes = []
    if "Dropout" in mods:
        notes.append("F.dropout on the CPU keeps a float noise tensor (4 B/element) where the engine models the "
                     "CUDA kernel's bool mask (1 B/element)")
    if "StochasticDepth" in mods:
        notes.append("StochasticDepth ('row') keeps a per-sample (N,1,1,1) fp32 noise tensor each time a "
                     "block with p > 0 applies it (stochastic_depth_masks), not modelled")
    out["saved_notes"] = "; ".join(notes) or "none"
    return out


def main(argv):
    specs = {}
    for f in sorted(glob.glob(os.path.join(ROOT, "models", "*.yaml"))):
        d = yaml.safe_load(open(f))
        if d.get("arch") == "cnn" and str(d.get("reference", {}).get("library", "")).startswith("torchvision"):
            specs[d["name"]] = d
    names = argv or sorted(specs)
    data = json.load(open(OUT)) if os.path.exists(OUT) else []
    data = [e for e in data if e["name"] not in names]
    for n in names:
        e = measure(n, specs[n])
        print(f"{n:22s} params {e['params']:>12,}  fwd {e['forward_flops']:>16,}  fwd+bwd {e['forward_backward_flops']:>16,}"
              f"  (counter {e['forward_backward_flops_flop_counter']:,})", flush=True)
        data.append(e)
    data.sort(key=lambda e: e["name"])
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
