"""Forward matmul FLOPs of imported configs, counted by torch.

Run with transformers + torch (the project used /work/venvs/ref:
transformers 5.24.0, torch 2.13.0 CPU), from the repository root:

    python tests/data/hf_configs/extra/make_hf_flops.py

Builds each config's architectures[0] class with eager attention, runs one
forward pass at batch 1 (sequence 128 for text, the config's image size for
ViT) under torch.utils.flop_counter.FlopCounterMode (matmuls and
convolutions, 2 FLOPs per multiply-accumulate) and writes hf_flops.json.
"""
import json
import os

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = ["../pythia-160m--GPTNeoXForCausalLM.json", "../qwen2-0.5b--Qwen2ForCausalLM.json",
           "../vit-base-patch16-224--ViTModel.json", "../roberta-base--RobertaModel.json",
           "../distilbert-base--DistilBertModel.json", "bert-base--BertForPreTraining.json"]
out = {"library": f"transformers {transformers.__version__}", "torch": torch.__version__, "seq": 128, "batch": 1,
       "forward_matmul_flops": {}}
torch.manual_seed(0)
for rel in CONFIGS:
    d = json.load(open(os.path.join(HERE, rel)))
    cfg = transformers.AutoConfig.for_model(**{k: v for k, v in d.items() if k != "architectures"})
    cfg._attn_implementation = "eager"
    m = getattr(transformers, d["architectures"][0])(cfg).eval()
    if d["model_type"] == "vit":
        s = d.get("image_size", 224)
        x = {"pixel_values": torch.randn(1, 3, s, s)}
    else:
        x = {"input_ids": torch.randint(0, 100, (1, 128))}
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m(**x)
    out["forward_matmul_flops"][os.path.basename(rel)] = fc.get_total_flops()
json.dump(out, open(os.path.join(HERE, "hf_flops.json"), "w"), indent=2)
print(json.dumps(out, indent=2))
