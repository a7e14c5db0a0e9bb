"""Hugging Face config.json import: exact parameter counts per family.

Ground truth: tests/data/reference_params.json (transformers 5.24.0,
sum(p.numel() for p in model.parameters()) on the meta device, built by
tests/data/make_reference_params.py) for the configs in tests/data/hf_configs/
(named NAME--CLASS.json, written from that file's `config` fields plus
model_type and architectures), and tests/data/hf_configs/extra/extra_params.json
(same method, tests/data/hf_configs/extra/make_extra_params.py) for heads and
variants the main file lacks (MLM heads, sequence classification, GPT-NeoX
without parallel residual, Llama with biases and head_dim, ViT without qkv bias)
and for the families added later: OPT (125m, 350m with project_in/out and
post-norm, 1.3b), GPT-J 6B, CodeGen 350M, GPT-Neo 125M, Falcon (7B multi-query,
40B new_decoder_architecture, RW-1B ALiBi), Phi-2, Gemma 2B, StableLM 2 1.6B and
BLOOM 560M -- each written from the official hub config.json hyperparameters.
"""
import glob
import json
import os

import pytest
import yaml
from click.testing import CliRunner

from costmodel import count_params, estimate, load_model
from costmodel.cli import main
from costmodel.hf import load_hf_config

HERE = os.path.dirname(os.path.abspath(__file__))
CFG = os.path.join(HERE, "data", "hf_configs")
REF = {(x["name"], x["class"]): x["params"]
       for x in json.load(open(os.path.join(HERE, "data", "reference_params.json")))}
EXTRA = json.load(open(os.path.join(CFG, "extra", "extra_params.json")))["params"]
MAIN_FILES = sorted(glob.glob(os.path.join(CFG, "*.json")))
EXTRA_FILES = sorted(f for f in glob.glob(os.path.join(CFG, "extra", "*.json")) if "--" in os.path.basename(f))


def test_every_transformers_reference_has_a_config():
    want = {k for k in REF if k[1][0].isupper() and not k[1].startswith(("ResNet", "VGG", "VisionTransformer"))}
    have = {tuple(os.path.basename(f)[:-5].split("--")) for f in MAIN_FILES}
    assert want == have
    families = {json.load(open(f))["model_type"] for f in MAIN_FILES + EXTRA_FILES}
    assert {"bert", "roberta", "gpt2", "gpt_neox", "llama", "mistral", "qwen2", "t5", "bart", "vit",
            "distilbert", "opt", "gptj", "codegen", "gpt_neo", "falcon", "phi", "gemma", "stablelm",
            "bloom"} <= families


@pytest.mark.parametrize("path", MAIN_FILES, ids=os.path.basename)
def test_exact_params_against_transformers(path):
    name, cls = os.path.basename(path)[:-5].split("--")
    assert count_params(load_hf_config(path)) == REF[(name, cls)]


@pytest.mark.parametrize("path", EXTRA_FILES, ids=os.path.basename)
def test_exact_params_extra_heads_and_variants(path):
    assert count_params(load_hf_config(path)) == EXTRA[os.path.basename(path)]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_estimate_takes_a_config_json_directly():
    p = os.path.join(CFG, "pythia-160m--GPTNeoXForCausalLM.json")
    r = run("estimate", p, "--batch", "2", "--seq", "256", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["params"] == 162322944 and d["workload"]["seq"] == 256


def test_import_writes_a_model_yaml_with_the_same_count(tmp_path):
    p = os.path.join(CFG, "qwen2-0.5b--Qwen2ForCausalLM.json")
    out = tmp_path / "qwen.yaml"
    r = run("import", "hf", p, "-o", out)
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "494,032,768" in text
    spec = load_model(str(out))
    assert count_params(spec) == 494032768
    d = yaml.safe_load(text)
    assert d["biases"] == {"qkv": True, "attn_out": False, "ffn": False, "lm_head": False}
    assert d["reference"]["class"] == "Qwen2ForCausalLM"


def _cost(tmp_path, cfg: dict, name="c.json"):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return str(p)


def test_partial_rotary_and_parallel_residual_change_the_costs(tmp_path):
    """GPT-NeoX: rotary on rotary_pct of each head (rotary FLOPs scale with it)
    and, with parallel residual, the FFN norm reads the layer input that the
    attention norm already saved (one b*s*d tensor less per layer)."""
    base = json.load(open(os.path.join(CFG, "pythia-160m--GPTNeoXForCausalLM.json")))
    full = dict(base, rotary_pct=1.0)
    seq = dict(base, use_parallel_residual=False)
    r_q = estimate(_cost(tmp_path, base, "q.json"), batch=2, seq=128)
    r_f = estimate(_cost(tmp_path, full, "f.json"), batch=2, seq=128)
    r_s = estimate(_cost(tmp_path, seq, "s.json"), batch=2, seq=128)
    rot = lambda r: next(c for c in r.ops if c.path.endswith("attn.rotary")).op.fwd_flops
    assert rot(r_q) * 4 == rot(r_f) == 3 * 2 * 128 * (768 + 768)          # 3 FLOPs per element of q and k
    norm = lambda r: next(c for c in r.ops if c.path.endswith("ffn.norm")).op.saved_bytes
    assert norm(r_s) - norm(r_q) == 2 * 128 * 768 * 2                      # b*s*d bf16 elements
    assert r_q["params"] == r_s["params"] == 162322944


@pytest.mark.parametrize("cfg, needle", [
    ({"model_type": "gpt3", "n_layer": 2}, "did you mean: gptj, gpt2"),
    ({"model_type": "llama", "hidden_size": 64}, "missing field 'num_attention_heads'"),
    ({"model_type": "bert", "architectures": ["BertForTokenClassification"]}, "not supported"),
    ({"model_type": "gpt2", "n_embd": "768"}, "expected int"),
    ({"n_layer": 2}, "missing field 'model_type'"),
])
def test_bad_configs_give_one_line(tmp_path, cfg, needle):
    p = _cost(tmp_path, cfg)
    r = run("estimate", p)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert r.output.startswith(f"error: {p}") and needle in r.output, r.output


def test_invalid_json_names_the_line(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{\n  "model_type": "gpt2",\n  "n_layer": 12,,\n}\n')
    r = run("import", "hf", p)
    assert r.exit_code == 2 and f"{p}:3:" in r.output and "invalid JSON" in r.output, r.output


FLOPS = json.load(open(os.path.join(CFG, "extra", "hf_flops.json")))


@pytest.mark.parametrize("name", sorted(FLOPS["forward_matmul_flops"]))
def test_forward_matmul_flops_equal_torch_flop_counter(name):
    """Forward matmul FLOPs at batch 1 (seq 128 for text) equal torch's
    FlopCounterMode on the transformers model (hf_flops.json, made by
    tests/data/hf_configs/extra/make_hf_flops.py)."""
    path = os.path.join(CFG, name) if os.path.exists(os.path.join(CFG, name)) else os.path.join(CFG, "extra", name)
    kw = dict(batch=1, mode="inference", precision="fp32")
    if "vit" not in name:
        kw["seq"] = FLOPS["seq"]
    assert estimate(path, "a100-80gb", kw)["forward_matmul_flops"] == FLOPS["forward_matmul_flops"][name]


def _ops(name, **kw):
    r = estimate(os.path.join(CFG, "extra", name), "a100-80gb", dict(batch=1, seq=16, mode="inference", **kw))
    return {c.path.split("/", 1)[1]: c for c in r.ops}


def test_new_structures_appear_in_the_op_tree():
    """The schema options behind the new families change the ops, not only the totals."""
    gptj = _ops("gpt-j-6b--GPTJForCausalLM.json")            # one ln_1 for attention and MLP
    assert "decoder/layer/attn.norm" in gptj and not any(k.endswith("ffn.norm") for k in gptj)
    assert gptj["lm_head/lm_head"].op.dims["bias"] and gptj["decoder/layer/attn.rotary"].op.dims["elements"] == \
        2 * 16 * 16 * 64                                    # q and k: 16 tokens x 16 heads x rotary_dim 64
    neox = _ops("../pythia-160m--GPTNeoXForCausalLM.json")   # two norms: unchanged
    assert "decoder/layer/ffn.norm" in neox
    bloom = _ops("bloom-560m--BloomForCausalLM.json")        # ALiBi: no position table, a bias on the scores
    assert "decoder/embeddings/norm" in bloom and "decoder/layer/attn.position_bias" in bloom
    assert not any("position" in k for k in bloom if "embeddings" in k)
    opt = _ops("opt-350m--OPTForCausalLM.json")              # 512-wide table, projected in and out
    assert opt["decoder/embeddings/project_in"].op.dims == dict(tokens=16, d_in=512, d_out=1024, bias=False)
    assert opt["decoder/project_out"].op.dims == dict(tokens=16, d_in=1024, d_out=512, bias=False)
    assert opt["lm_head/lm_head"].op.params == 0            # tied to the 512-wide embed_tokens
    assert "decoder/final_norm" not in opt                  # post-norm OPT-350m has no final LayerNorm
    gemma = _ops("gemma-2b--GemmaForCausalLM.json")
    assert gemma["decoder/embeddings/token_scale"].op.fwd_flops == 16 * 2048
    assert gemma["decoder/layer/attn.k_proj"].op.dims["d_out"] == 256   # one K head of 256 (multi-query)
    f40 = _ops("falcon-40b--FalconForCausalLM.json")          # new_decoder_architecture: ln_attn + ln_mlp, 8 KV heads
    assert "decoder/layer/ffn.norm" in f40 and f40["decoder/layer/attn.k_proj"].op.dims["d_out"] == 8 * 64


@pytest.mark.parametrize("cfg, field, needle", [
    ({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
      "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000, "max_position_embeddings": 32768},
     "num_local_experts", "mixture-of-experts layers (num_local_experts 8, num_experts_per_tok 2)"),
    ({"model_type": "qwen2_moe", "architectures": ["Qwen2MoeForCausalLM"], "hidden_size": 2048,
      "num_experts": 60, "num_experts_per_tok": 4, "moe_intermediate_size": 1408}, "num_experts",
     "'qwen2_moe' is not supported: mixture-of-experts"),
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_local_experts": 4},
     "num_local_experts", "mixture-of-experts layers (num_local_experts 4)"),
    ({"model_type": "phi", "architectures": ["PhiForCausalLM"], "hidden_size": 64, "qk_layernorm": True},
     "qk_layernorm", "qk_layernorm (a LayerNorm on queries and keys) is not modelled"),
    ({"model_type": "falcon", "hidden_size": 64, "num_attention_heads": 4, "new_decoder_architecture": True,
      "parallel_attn": False}, "parallel_attn", "does not run in transformers"),
    ({"model_type": "bloom", "hidden_size": 64, "apply_residual_connection_post_layernorm": True},
     "apply_residual_connection_post_layernorm", "not modelled"),
])
def test_unmodelled_features_are_refused_naming_the_feature(tmp_path, cfg, field, needle):
    """MoE (Mixtral's official hyperparameters; Qwen1.5-MoE-A2.7B) and options the
    schema lacks: one line naming the file, the line of the field and the feature --
    never a dense estimate."""
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg, indent=1))
    line = next(i for i, t in enumerate(p.read_text().splitlines(), 1) if t.strip().startswith(f'"{field}"'))
    r = run("estimate", p)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert r.output.startswith(f"error: {p}:{line}: {field}: ") and needle in r.output, r.output


NEW_FAMILY_FILES = [f for f in EXTRA_FILES if json.load(open(f))["model_type"] in
                    ("opt", "gptj", "codegen", "gpt_neo", "falcon", "phi", "gemma", "stablelm", "bloom")]


@pytest.mark.parametrize("path", NEW_FAMILY_FILES, ids=os.path.basename)
def test_new_families_exact_against_their_torch_build(path):
    """`costmodel validate --exact` on one layer (meta device, batch 2, seq 16):
    parameters, forward and forward+backward matmul FLOPs and saved-for-backward
    bytes of the engine equal torch's own count for the module
    costmodel/validate/torch_build.py builds from the same spec (shared
    parallel norm, ALiBi, project_in/out, embedding scale included). Needs torch."""
    pytest.importorskip("torch")
    from costmodel.validate.exact import check
    r = check(path, batch=2, seq=16, overrides={"layers": 1}, device="meta")
    assert r.params_torch == r.params_engine and r.fwd_flops_torch == r.fwd_flops_engine
    assert {g.kind for g in r.gaps} <= {"rotary", "norm"} and r.unexplained == 0 and r.ok
