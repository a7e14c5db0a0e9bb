"""Regression tests for the pitfalls of the tools costmodel must beat (shared/peers.md, a side-by-side study).

Each test names the tool and its wrong number, then checks the engine's own computation against ground
truth stated in the test: the transformers reference counts (tests/data/reference_params.json, built by
tests/data/make_reference_params.py), torch FlopCounterMode counts (tests/data/reference_flops.json), or a
closed-form formula written out here.
"""
import json
import os
import re

import pytest
from click.testing import CliRunner

from costmodel import estimate
from costmodel.build import Shape, build
from costmodel.cli import main
from costmodel.errors import CostModelError
from costmodel.ops import Precision, make

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
BAD = os.path.join(HERE, "bad_inputs")
HF = os.path.join(DATA, "hf_configs")
A100 = "a100-80gb"
REF = {(x["name"], x["class"]): x for x in json.load(open(os.path.join(DATA, "reference_params.json")))}
FLOPS = {x["name"]: x for x in json.load(open(os.path.join(DATA, "reference_flops.json")))}

L, D, V, POS, FF = 12, 768, 50257, 1024, 3072          # GPT-2 small (Radford et al. 2019; HF config 'gpt2')
NO_BIAS = {"model.biases.qkv": False, "model.biases.attn_out": False, "model.biases.ffn": False}


def gpt2(**wl):
    overrides = wl.pop("overrides", None)
    return estimate("gpt2", A100, {"batch": 1, "seq": POS, **wl}, overrides=overrides)


# --- parameter counts ------------------------------------------------------------------------------------------------
def test_gpt2_has_124_439_808_parameters_not_123_55m():
    """llm-analysis reports 123.55M for GPT-2: it ignores biases and the position table. transformers
    5.24.0 GPT2LMHeadModel: 124,439,808. The difference is exactly the position table (1024 x 768) and the
    biases (per layer: qkv 3d, attention out d, fc1 4d, fc2 d), which the engine adds and can remove."""
    ref = REF[("gpt2", "GPT2LMHeadModel")]["params"]
    full = gpt2()["params"]
    assert full == ref == 124_439_808
    biases = L * (3 * D + D + 4 * D + D)
    bare = gpt2(overrides={"model.position": "none", **NO_BIAS})["params"]
    assert full - bare == POS * D + biases
    # what is left: the weight matrices, the token table and the LayerNorms (2 per layer + final, weight + bias)
    assert bare == 12 * L * D * D + V * D + (2 * L + 1) * 2 * D


def test_tied_gpt2_is_not_counted_twice():
    """accelerate estimate-memory counts tied GPT-2 as 163M on the meta device (+31%): the LM head shares
    the token embedding (tie_word_embeddings=True). reference_params.json notes that
    named_parameters(remove_duplicate=False) sums to 163,037,184; costmodel counts the table once, from
    the YAML and from the Hugging Face config alike. Untying adds exactly V x d."""
    ref = REF[("gpt2", "GPT2LMHeadModel")]
    assert "163037184" in ref["notes"]
    assert gpt2()["params"] == ref["params"]
    hf = estimate(os.path.join(HF, "gpt2--GPT2LMHeadModel.json"), A100, dict(batch=1, seq=128))["params"]
    assert hf == ref["params"]
    untied = gpt2(overrides={"model.tied_embeddings": False})["params"]
    assert untied - ref["params"] == V * D and untied == 163_037_184


# --- FLOPs -------------------------------------------------------------------------------------------------------------
def test_attention_flops_are_counted_at_seq_1024():
    """calflops / fvcore / ptflops / FlopCounterMode miss the fused F.scaled_dot_product_attention on the CPU:
    GPT-2 at seq 1024 comes out 13.3% low. The engine's forward matmul FLOPs = linears + LM head
    (2 FLOPs per MAC of every weight matrix) + QK^T and PV (2 x 2 s^2 d per layer), and the attention
    share is the missing 13.3%. With flash attention it is still counted (halved by the causal kernel)."""
    s = POS
    linears = 2 * s * (12 * L * D * D + V * D)
    attention = L * 2 * (2 * s * s * D)
    r = gpt2()
    assert r["forward_matmul_flops"] == linears + attention
    assert round(100 * attention / r["forward_matmul_flops"], 1) == 13.3
    flash = gpt2(flash=True)
    assert flash["forward_matmul_flops"] == linears + attention / 2


def test_lm_head_is_two_flops_per_mac():
    """LLM-Viewer counts the lm_head at 1 op per MAC. The engine: 2 x tokens x d x V forward, twice that
    backward (input and weight gradients)."""
    b, s = 2, 512
    r = gpt2(batch=b, seq=s)
    (head,) = [c for c in r.ops if c.path.endswith("/lm_head")]
    assert head.op.fwd_flops == head.op.matmul_flops == 2 * b * s * D * V
    assert head.op.bwd_matmul_flops == 2 * head.op.matmul_flops


def test_backward_flops_are_present_and_match_torch():
    """'Backward FLOPs missing or untrusted': the engine's backward matmul FLOPs are 2x forward for GPT-2 (every
    product has an input and a weight gradient; the embedding backward is a scatter-add, not a matmul), and
    forward + backward equals torch FlopCounterMode on transformers' GPT2LMHeadModel (batch 1, seq 128;
    tests/data/reference_flops.json)."""
    ref = FLOPS["gpt2"]
    r = gpt2(batch=ref["batch"], seq=ref["seq"])
    assert r["backward_matmul_flops"] == 2 * r["forward_matmul_flops"]
    assert r["forward_matmul_flops"] == ref["forward_flops"]
    assert r["forward_matmul_flops"] + r["backward_matmul_flops"] == ref["forward_backward_flops"]
    assert r["backward_flops"] > r["forward_flops"] > 0


# --- units ----------------------------------------------------------------------------------------------------------------
_PAIR = re.compile(r"([\d.]+) ([kMGT]?)B \(([\d.]+) ([KMGT]i)B\)")
_DEC = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BIN = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}


def _half_ulp(text: str) -> float:
    return 0.5 * 10 ** -(len(text.split(".")[1]) if "." in text else 0)


def test_gb_and_gib_labels_match_their_values():
    """llm-analysis prints GiB labelled GB (7% off at this scale). Every memory line of the table output
    shows 'X GB (Y GiB)': X x 1e9 and Y x 2^30 must be the same number of bytes to the printed digits, and
    the A100's 80 GiB (85,899,345,920 bytes, nvidia-smi) reads 85.9 GB."""
    res = CliRunner().invoke(main, ["estimate", "gpt2", "--batch", "8"])
    assert res.exit_code == 0, res.output
    pairs = _PAIR.findall(res.output)
    assert len(pairs) >= 8
    for dec, p1, binary, p2 in pairs:
        a, b = float(dec) * _DEC[p1], float(binary) * _BIN[p2]
        assert abs(a - b) <= _half_ulp(dec) * _DEC[p1] + _half_ulp(binary) * _BIN[p2], (dec, p1, binary, p2)
    assert "85.9 GB (80 GiB)" in res.output


# --- GQA / KV cache ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg,layers,kv_heads,d_head", [
    ("llama-3-8b--LlamaForCausalLM.json", 32, 8, 128),
    ("qwen2-0.5b--Qwen2ForCausalLM.json", 24, 2, 64),
])
def test_gqa_kv_cache_uses_kv_heads(cfg, layers, kv_heads, d_head):
    """'GQA/KV-cache formula bugs': the cache is 2 (K and V) x layers x batch x kv_heads x d_head x context x
    bytes (Ainslie et al. 2023), not x heads. Llama-3-8B (num_key_value_heads 8 of 32): 128 KiB per token
    in bf16; Qwen2-0.5B (2 of 14): 12 KiB. Imported straight from the Hugging Face configs, whose exact
    parameter counts tests/test_hf.py checks against transformers."""
    b, seq, gen = 2, 1000, 24
    r = estimate(os.path.join(HF, cfg), A100, dict(mode="inference", batch=b, seq=seq, gen_tokens=gen))
    per_token = 2 * layers * kv_heads * d_head * 2
    assert r["kv_cache_bytes"] == per_token * b * (seq + gen)
    assert per_token == {8: 128 * 1024, 2: 12 * 1024}[kv_heads]


def test_inference_weights_include_embeddings():
    """LLM-Viewer's weight bytes leave out the embeddings. Llama-2-7B in bf16: all 6,738,415,616 parameters
    (transformers reference), untied token table and LM head included, x 2 bytes."""
    r = estimate("llama-2-7b", A100, dict(mode="inference", batch=1, seq=128, gen_tokens=8))
    assert r["weight_bytes"] == 2 * REF[("llama-2-7b", "LlamaForCausalLM")]["params"]


# --- nothing unsupported is silently ignored ---------------------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    ([os.path.join(BAD, "cnn_bad_layer_type.yaml")], "unknown type 'rleu'"),
])
def test_unknown_cnn_layer_type_is_an_error(args, needle):
    """'Unsupported ops ignored without a warning': a CNN layer type the builders do not know stops the
    estimate with a one-line error (exit 2) naming the file, line and layer, never a smaller model."""
    res = CliRunner().invoke(main, ["estimate", *args])
    assert res.exit_code == 2 and needle in res.output and res.output.count("\n") == 1


def test_unmodelled_architecture_features_are_errors(tmp_path):
    """A mixture-of-experts field in a model YAML, an MoE Hugging Face family and an unknown activation are
    refused, not estimated as a dense model; a feature modelled approximately (Mistral's sliding window)
    says so in the spec's notes."""
    moe = tmp_path / "moe.yaml"
    moe.write_text("name: tiny-moe\narch: transformer\nstructure: decoder\nlayers: 2\nd_model: 64\nheads: 4\n"
                   "d_ff: 256\nvocab_size: 100\nmax_positions: 32\nnum_experts: 8\n")
    mixtral = tmp_path / "mixtral.json"
    mixtral.write_text(json.dumps({"model_type": "mixtral", "hidden_size": 64, "num_local_experts": 8}))
    relu2 = tmp_path / "relu2.json"
    relu2.write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                                 "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                                 "vocab_size": 100, "max_position_embeddings": 64, "hidden_act": "relu2"}))
    for path, needle in ((moe, "num_experts: unknown field"), (mixtral, "'mixtral' is not supported"),
                         (relu2, "'relu2' is not supported")):
        with pytest.raises(CostModelError, match=re.escape(needle)):
            estimate(str(path), A100, dict(batch=1))
    from costmodel.hf import load_hf_config
    assert "sliding_window 4096" in load_hf_config(os.path.join(HF, "mistral-7b--MistralForCausalLM.json")).notes


def test_builders_and_op_registry_raise_on_what_they_do_not_know():
    """The builder dispatch and the op registry have no fallback that would return an empty (zero-cost) node."""
    p = Precision.of("bf16")
    with pytest.raises(TypeError):
        build(object(), Shape(batch=1, seq=8), p)
    with pytest.raises(KeyError):
        make("conv3d", "x", p)
