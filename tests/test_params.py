"""Parameter counts equal the real implementations, to the parameter.

Ground truth: tests/data/reference_params.json, produced by
tests/data/make_reference_params.py, which builds each reference model
(Hugging Face transformers 5.24.0 / torchvision 0.29.1 / torch.nn, torch 2.13-2.14)
from a hand-written config on the meta device and sums p.numel() over
model.parameters() (tied weights counted once).
"""
import glob
import json
import os

import pytest
import yaml

from costmodel import count_params, load_model

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
REF = json.load(open(os.path.join(HERE, "data", "reference_params.json")))

# shipped model name -> (reference entry name, class) in reference_params.json
SHIPPED_TO_REF = {
    "bert-base": ("bert-base", "BertModel"), "bert-large": ("bert-large", "BertModel"),
    "gpt2": ("gpt2", "GPT2LMHeadModel"), "gpt2-medium": ("gpt2-medium", "GPT2LMHeadModel"),
    "gpt2-large": ("gpt2-large", "GPT2LMHeadModel"), "gpt2-xl": ("gpt2-xl", "GPT2LMHeadModel"),
    **{f"gpt3-{s}": (f"gpt3-{s}", "GPT2LMHeadModel") for s in ("125m", "350m", "760m", "1.3b", "2.7b", "6.7b", "13b", "175b")},
    "t5-small": ("t5-small", "T5ForConditionalGeneration"), "t5-base": ("t5-base", "T5ForConditionalGeneration"),
    "t5-large": ("t5-large", "T5ForConditionalGeneration"),
    "bart-base": ("bart-base", "BartForConditionalGeneration"),
    "bart-large": ("bart-large", "BartForConditionalGeneration"),
    "llama-2-7b": ("llama-2-7b", "LlamaForCausalLM"),
    "transformer-base": ("transformer-base", "torch.nn.Transformer+Embedding(tied)"),
    "transformer-big": ("transformer-big", "torch.nn.Transformer+Embedding(tied)"),
    "resnet18": ("resnet18", "ResNet"), "resnet34": ("resnet34", "ResNet"), "resnet50": ("resnet50", "ResNet"),
    "resnet101": ("resnet101", "ResNet"), "resnet152": ("resnet152", "ResNet"), "vgg16": ("vgg16", "VGG"),
    "vit-b16": ("vit_b_16", "VisionTransformer"), "vit-l16": ("vit_l_16", "VisionTransformer"),
    "vit-h14": ("vit_h_14", "VisionTransformer"), "vit-b32": ("vit_b_32", "VisionTransformer"),
    "vgg11": ("vgg11", "VGG"), "vgg13": ("vgg13", "VGG"), "vgg19": ("vgg19", "VGG"), "vgg16-bn": ("vgg16_bn", "VGG"),
    "resnext50-32x4d": ("resnext50_32x4d", "ResNet"), "wide-resnet50-2": ("wide_resnet50_2", "ResNet"),
    "lstm-2x1024": ("lstm-512-1024-2l", "torch.nn.LSTM"), "bilstm-512": ("lstm-256-512-bi", "torch.nn.LSTM"),
    "gru-2x1024": ("gru-512-1024-2l", "torch.nn.GRU"),
}


def _ref(name, cls):
    for r in REF:
        if r["name"] == name and r["class"] == cls:
            return r
    raise KeyError((name, cls))


@pytest.mark.parametrize("model", sorted(SHIPPED_TO_REF))
def test_shipped_model_matches_reference_implementation(model):
    ref = _ref(*SHIPPED_TO_REF[model])
    assert count_params(load_model(model)) == ref["params"], (model, ref["library"], ref["class"])


def test_every_shipped_model_names_its_reference_and_matches_it():
    files = sorted(glob.glob(os.path.join(ROOT, "models", "*.yaml")))
    assert len(files) >= 30
    for f in files:
        spec = load_model(f)
        assert spec.reference is not None and spec.reference.library and spec.reference.cls, f
        assert spec.reference.params is not None, f
        assert count_params(spec) == spec.reference.params, f


def test_mlp_count_by_hand():
    # Linear(784,512)+Linear(512,256)+Linear(256,10), weights + biases
    assert count_params(load_model("mlp-mnist")) == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10


def test_params_do_not_depend_on_workload():
    from costmodel import estimate
    a = estimate("gpt2", "a100-80gb", batch=1, seq=128)["params"]
    b = estimate("gpt2", "a100-80gb", batch=7, seq=1024)["params"]
    assert a == b == 124_439_808
