"""Ground truth for the extra hand-written configs in this folder.

Run with a transformers install (the project used /work/venvs/ref:
transformers 5.24.0, torch 2.13.0 CPU):

    python tests/data/hf_configs/extra/make_extra_params.py

Builds each architectures[0] class on the meta device from its config.json
and writes sum(p.numel() for p in model.parameters()) (tied weights counted
once, as Hugging Face reports) to extra_params.json next to this script.
"""
import glob
import json
import os

import torch
import transformers

here = os.path.dirname(os.path.abspath(__file__))
out = {"library": f"transformers {transformers.__version__}", "torch": torch.__version__, "params": {}}
for f in sorted(glob.glob(os.path.join(here, "*--*.json"))):   # NAME--CLASS.json (not the outputs)
    d = json.load(open(f))
    cfg = transformers.AutoConfig.for_model(**{k: v for k, v in d.items() if k != "architectures"})
    cls = getattr(transformers, d["architectures"][0])
    with torch.device("meta"):
        m = cls(cfg)
    out["params"][os.path.basename(f)] = sum(p.numel() for p in m.parameters())
json.dump(out, open(os.path.join(here, "extra_params.json"), "w"), indent=2)
print(json.dumps(out, indent=2))
