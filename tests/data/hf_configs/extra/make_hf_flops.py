"""Forward matmul FLOPs of imported configs, counted by torch.

Run with transformers + torch (the project used /work/venvs/ref:
transformers 5.24.0, torch 2.13.0 CPU), from the repository root:

    python tests/data/hf_configs/extra/make_hf_flops.py

Builds each config's architectures[0] class with eager attention, runs one
forward pass at batch 1 (sequence 128 for text, the config's image size for
ViT) under torch.utils.flop_counter.FlopCounterMode (matmuls and
convolutions, 2 FLOPs per multiply-accumulate) and writes hf_flops.json.

Models run on the meta device (shapes, no data: FlopCounterMode counts from
shapes, so the totals are those of a CPU run -- the six CPU-measured entries
of the first version of this file came out identical -- and 7B-40B models
need no memory).
"""
import json
import os

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = ["../pythia-160m--GPTNeoXForCausalLM.json", "../qwen2-0.5b--Qwen2ForCausalLM.json",
           "../vit-base-patch16-224--ViTModel.json", "../roberta-base--RobertaModel.json",
           "../distilbert-base--DistilBertModel.json", "bert-base--BertForPreTraining.json",
           "opt-125m--OPTForCausalLM.json", "opt-350m--OPTForCausalLM.json", "opt-1.3b--OPTForCausalLM.json",
           "gpt-j-6b--GPTJForCausalLM.json", "codegen-350m-mono--CodeGenForCausalLM.json",
           "gpt-neo-125m--GPTNeoForCausalLM.json", "falcon-7b--FalconForCausalLM.json",
           "falcon-40b--FalconForCausalLM.json", "falcon-rw-1b--FalconForCausalLM.json", "phi-2--PhiForCausalLM.json",
           "gemma-2b--GemmaForCausalLM.json", "stablelm-2-1_6b--StableLmForCausalLM.json",
           "bloom-560m--BloomForCausalLM.json"]
out = {"library": f"transformers {transformers.__version__}", "torch": torch.__version__, "seq": 128, "batch": 1,
       "forward_matmul_flops": {}}
torch.manual_seed(0)
for rel in CONFIGS:
    d = json.load(open(os.path.join(HERE, rel)))
    cfg = transformers.AutoConfig.for_model(**{k: v for k, v in d.items() if k != "architectures"})
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
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
