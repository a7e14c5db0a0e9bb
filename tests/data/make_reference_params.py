#!/usr/bin/env python
"""Generate ground-truth parameter counts (reference_params.json) and FLOP counts
(reference_flops.json) from real implementations.

Every model is built from a hand-written config (no hub downloads); parameter
counts use meta-device construction, ``sum(p.numel() for p in model.parameters())``,
which de-duplicates tied weights exactly as Hugging Face reports them.

Environments used to produce the committed files:
  * /work/venvs/ref : python3.11, torch==2.13.0 (CPU), transformers 5.24.0
      -> transformers + torch.nn parameter counts, HF FLOP counts
  * /work/venvs/tv  : python3.11, torch==2.14.1, torchvision==0.29.1
      -> torchvision parameter counts, resnet50 FLOP counts

Usage (merges into existing JSON files, replacing entries with the same key):
  /work/venvs/ref/bin/python tests/data/make_reference_params.py --groups transformers,nn,flops
  /work/venvs/tv/bin/python  tests/data/make_reference_params.py --groups torchvision,flops

Each group is skipped (with a message) when its library is not importable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
PARAMS_PATH = os.path.join(HERE, "reference_params.json")
FLOPS_PATH = os.path.join(HERE, "reference_flops.json")

TORCH_VERSION = torch.__version__.split("+")[0]


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nodedup(model: nn.Module) -> int:
    return sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))


def tie_note(model: nn.Module) -> str:
    total, nodedup = count(model), count_nodedup(model)
    if total == nodedup:
        return "no tied parameters"
    return (f"tied parameters de-duplicated: named_parameters(remove_duplicate=False) "
            f"sums to {nodedup} (+{nodedup - total})")


def buffer_note(model: nn.Module) -> str:
    bufs = [(n, b.numel()) for n, b in model.named_buffers()]
    big = [f"{n}({k})" for n, k in bufs if "final_logits_bias" in n]
    return ("; buffers (not counted): " + ", ".join(big)) if big else ""


# ----------------------------------------------------------------------------
# transformers
# ----------------------------------------------------------------------------

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512,
                 type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
BERT_LARGE = dict(BERT_BASE, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096)

GPT2_SIZES = {
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16),
    "gpt2-large": dict(n_layer=36, n_embd=1280, n_head=20),
    "gpt2-xl": dict(n_layer=48, n_embd=1600, n_head=25),
}
GPT2_COMMON = dict(vocab_size=50257, n_positions=1024, activation_function="gelu_new",
                   layer_norm_epsilon=1e-5, tie_word_embeddings=True)

# GPT-3 paper (Brown et al. 2020) Table 2.1
GPT3_SIZES = {
    "gpt3-125m": (12, 768, 12),
    "gpt3-350m": (24, 1024, 16),
    "gpt3-760m": (24, 1536, 16),
    "gpt3-1.3b": (24, 2048, 16),  # table says 24 heads x 128; 24 does not divide 2048
    "gpt3-2.7b": (32, 2560, 32),
    "gpt3-6.7b": (32, 4096, 32),
    "gpt3-13b": (40, 5120, 40),
    "gpt3-175b": (96, 12288, 96),
}

T5_COMMON = dict(vocab_size=32128, d_kv=64, relative_attention_num_buckets=32,
                 relative_attention_max_distance=128, feed_forward_proj="relu",
                 layer_norm_epsilon=1e-6, dropout_rate=0.1, tie_word_embeddings=True,
                 is_encoder_decoder=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
T5_SIZES = {
    "t5-small": dict(d_model=512, d_ff=2048, num_heads=8, num_layers=6, num_decoder_layers=6),
    "t5-base": dict(d_model=768, d_ff=3072, num_heads=12, num_layers=12, num_decoder_layers=12),
    "t5-large": dict(d_model=1024, d_ff=4096, num_heads=16, num_layers=24, num_decoder_layers=24),
}

BART_COMMON = dict(vocab_size=50265, max_position_embeddings=1024, activation_function="gelu",
                   scale_embedding=False, tie_word_embeddings=True, pad_token_id=1,
                   bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                   is_encoder_decoder=True)
BART_SIZES = {
    "bart-base": dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                      decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072),
    "bart-large": dict(d_model=1024, encoder_layers=12, decoder_layers=12,
                       encoder_attention_heads=16, decoder_attention_heads=16,
                       encoder_ffn_dim=4096, decoder_ffn_dim=4096),
}

LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, hidden_act="silu",
                 max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                 attention_bias=False, mlp_bias=False, tie_word_embeddings=False)
LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 hidden_act="silu", max_position_embeddings=8192, rms_norm_eps=1e-5,
                 rope_theta=500000.0, attention_bias=False, mlp_bias=False,
                 tie_word_embeddings=False)
TINYLLAMA = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                 num_attention_heads=32, num_key_value_heads=4, hidden_act="silu",
                 max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
                 attention_bias=False, mlp_bias=False, tie_word_embeddings=False)
MISTRAL_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                  hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-5,
                  rope_theta=10000.0, sliding_window=4096, tie_word_embeddings=False)
QWEN2_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, hidden_act="silu",
                 max_position_embeddings=131072, rms_norm_eps=1e-6, rope_theta=1000000.0,
                 use_sliding_window=False, tie_word_embeddings=True)
QWEN2_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, hidden_act="silu",
                max_position_embeddings=131072, rms_norm_eps=1e-6, rope_theta=1000000.0,
                use_sliding_window=False, tie_word_embeddings=False)
ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=514,
                    type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2)
PYTHIA_COMMON = dict(vocab_size=50304, hidden_act="gelu", max_position_embeddings=2048,
                     rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
                     layer_norm_eps=1e-5, attention_bias=True, tie_word_embeddings=False,
                     bos_token_id=0, eos_token_id=0)
PYTHIA_160M = dict(PYTHIA_COMMON, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072)
PYTHIA_1B = dict(PYTHIA_COMMON, hidden_size=2048, num_hidden_layers=16, num_attention_heads=8,
                 intermediate_size=8192)
VIT_B16 = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
               hidden_act="gelu", image_size=224, patch_size=16, num_channels=3, qkv_bias=True,
               layer_norm_eps=1e-12)
DISTILBERT = dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
                  max_position_embeddings=512, sinusoidal_pos_embds=False, activation="gelu",
                  pad_token_id=0, tie_word_embeddings=True)


def transformers_entries():
    import transformers as tf

    lib = f"transformers {tf.__version__}"
    out = []

    def add(name, cls, cfg_cls, cfg, notes="", model_kwargs=None):
        config = cfg_cls(**cfg)
        with torch.device("meta"):
            model = cls(config, **(model_kwargs or {}))
        n = count(model)
        full_notes = "; ".join(x for x in [notes, tie_note(model)] if x) + buffer_note(model)
        rec_cfg = dict(cfg)
        if model_kwargs:
            rec_cfg["__model_kwargs__"] = model_kwargs
        out.append(dict(name=name, library=lib, **{"class": cls.__name__}, config=rec_cfg,
                        params=n, notes=full_notes))
        print(f"{name:24s} {cls.__name__:32s} {n:>16,d}", flush=True)
        return model

    # BERT
    add("bert-base", tf.BertModel, tf.BertConfig, BERT_BASE,
        "bert-base-uncased; BertModel with pooler (add_pooling_layer=True)")
    add("bert-large", tf.BertModel, tf.BertConfig, BERT_LARGE,
        "bert-large-uncased; BertModel with pooler")
    add("bert-base", tf.BertForMaskedLM, tf.BertConfig, BERT_BASE,
        "bert-base-uncased; no pooler; MLM head = dense(768x768)+bias, LayerNorm, decoder tied "
        "to word embeddings + decoder bias (30522)")

    # GPT-2
    for name, sz in GPT2_SIZES.items():
        cfg = dict(GPT2_COMMON, **sz)
        add(name, tf.GPT2LMHeadModel, tf.GPT2Config, cfg, f"{name}; lm_head tied to wte")
        add(name, tf.GPT2Model, tf.GPT2Config, cfg, f"{name}; no LM head")

    # GPT-3 family as GPT2LMHeadModel
    for name, (L, d, h) in GPT3_SIZES.items():
        cfg = dict(vocab_size=50257, n_positions=2048, n_embd=d, n_layer=L, n_head=h,
                   n_inner=4 * d, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                   tie_word_embeddings=True)
        note = (f"GPT-3 paper Table 2.1 size, dense attention, GPT2LMHeadModel, lm_head tied to "
                f"wte, n_ctx 2048")
        if name == "gpt3-1.3b":
            note += "; table lists 24 heads x d_head 128 (does not divide 2048), 16 heads used; params independent of heads"
        if name == "gpt3-175b":
            # Extrapolate exactly from a 1-layer model and cross-check a full meta build.
            cfg1 = dict(cfg, n_layer=1)
            cfg0 = dict(cfg, n_layer=2)
            with torch.device("meta"):
                m1 = tf.GPT2LMHeadModel(tf.GPT2Config(**cfg1))
                m2 = tf.GPT2LMHeadModel(tf.GPT2Config(**cfg0))
            block = count(m2) - count(m1)
            base = count(m1) - block
            extrap = base + L * block
            model = add(name, tf.GPT2LMHeadModel, tf.GPT2Config, cfg,
                        note + f"; full 96-layer meta build, equals extrapolation "
                               f"(embeddings+ln_f {base} + 96 x block {block} = {extrap})")
            assert count(model) == extrap, (count(model), extrap)
            del model
        else:
            add(name, tf.GPT2LMHeadModel, tf.GPT2Config, cfg, note)

    # T5 v1.0
    for name, sz in T5_SIZES.items():
        cfg = dict(T5_COMMON, **sz)
        add(name, tf.T5ForConditionalGeneration, tf.T5Config, cfg,
            f"{name} (original v1.0): ReLU FFN (wi, wo, no biases), no biases anywhere; shared "
            f"embedding tied to encoder/decoder embed_tokens and lm_head (logits scaled by "
            f"d_model^-0.5 instead); relative_attention_bias (32 buckets x heads) only in layer 0 "
            f"of encoder self-attn and decoder self-attn (not cross-attn); RMS-style LayerNorm "
            f"weight only, incl. final_layer_norm of encoder and decoder")
        add(name, tf.T5Model, tf.T5Config, cfg, f"{name}; no lm_head")

    # BART
    for name, sz in BART_SIZES.items():
        cfg = dict(BART_COMMON, **sz)
        add(name, tf.BartForConditionalGeneration, tf.BartConfig, cfg,
            f"{name}: learned positions have max_position_embeddings+2 = 1026 rows (offset 2) in "
            f"both encoder and decoder; layernorm_embedding in encoder and decoder, no final "
            f"layer norm; lm_head tied to shared embedding; final_logits_bias is a buffer")
        add(name, tf.BartModel, tf.BartConfig, cfg, f"{name}; no lm_head")

    # Llama family / Mistral / Qwen2
    add("llama-2-7b", tf.LlamaForCausalLM, tf.LlamaConfig, LLAMA2_7B, "meta-llama/Llama-2-7b-hf")
    add("llama-3-8b", tf.LlamaForCausalLM, tf.LlamaConfig, LLAMA3_8B, "meta-llama/Meta-Llama-3-8B; GQA 8 kv heads")
    add("tinyllama-1.1b", tf.LlamaForCausalLM, tf.LlamaConfig, TINYLLAMA,
        "TinyLlama/TinyLlama-1.1B (intermediate-step-1431k-3T / Chat-v1.0 share this config); GQA 4 kv heads")
    add("mistral-7b", tf.MistralForCausalLM, tf.MistralConfig, MISTRAL_7B,
        "mistralai/Mistral-7B-v0.1; GQA 8 kv heads")
    add("qwen2-0.5b", tf.Qwen2ForCausalLM, tf.Qwen2Config, QWEN2_05B,
        "Qwen/Qwen2-0.5B; q/k/v projections have bias, o_proj none; GQA 2 kv heads; lm_head tied")
    add("qwen2-7b", tf.Qwen2ForCausalLM, tf.Qwen2Config, QWEN2_7B,
        "Qwen/Qwen2-7B; q/k/v bias; GQA 4 kv heads; untied lm_head")

    # Encoders and others
    add("roberta-base", tf.RobertaModel, tf.RobertaConfig, ROBERTA_BASE,
        "roberta-base; RobertaModel with pooler; 514 positions, 1 token type")
    add("pythia-160m", tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig, PYTHIA_160M,
        "EleutherAI/pythia-160m; untied embed_out; vocab padded to 50304; qkv and dense biases")
    add("pythia-1b", tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig, PYTHIA_1B,
        "EleutherAI/pythia-1b; untied embed_out")
    add("vit-base-patch16-224", tf.ViTModel, tf.ViTConfig, VIT_B16,
        "google/vit-base-patch16-224 config; ViTModel with pooler (add_pooling_layer=True, "
        "dense 768x768+tanh); cls token + 197 position embeddings")
    add("vit-base-patch16-224", tf.ViTForImageClassification, tf.ViTConfig,
        dict(VIT_B16, num_labels=1000),
        "google/vit-base-patch16-224; no pooler; classifier Linear(768,1000) on CLS token")
    add("distilbert-base", tf.DistilBertModel, tf.DistilBertConfig, DISTILBERT,
        "distilbert-base-uncased; DistilBertModel (no pooler, no token types)")
    return out


# ----------------------------------------------------------------------------
# torch.nn
# ----------------------------------------------------------------------------

class TiedSeq2SeqTransformer(nn.Module):
    """nn.Transformer + one nn.Embedding shared by source, target and output projection."""

    def __init__(self, vocab, **kw):
        super().__init__()
        self.transformer = nn.Transformer(**kw)
        self.embed = nn.Embedding(vocab, kw["d_model"])
        self.out = nn.Linear(kw["d_model"], vocab, bias=False)
        self.out.weight = self.embed.weight


def nn_entries():
    lib = f"torch {TORCH_VERSION}"
    out = []

    def add(name, cls_name, cfg, model, notes):
        n = count(model)
        notes = "; ".join(x for x in [notes, tie_note(model)] if x)
        out.append(dict(name=name, library=lib, **{"class": cls_name}, config=cfg, params=n,
                        notes=notes))
        print(f"{name:24s} {cls_name:32s} {n:>16,d}", flush=True)

    rnn_note = ("PyTorch RNNs have two bias vectors per gate set (b_ih and b_hh); "
                "layer>0 input size is hidden_size*num_directions")
    for name, cls, cfg in [
        ("lstm-512-1024-2l", nn.LSTM, dict(input_size=512, hidden_size=1024, num_layers=2)),
        ("lstm-256-512-bi", nn.LSTM, dict(input_size=256, hidden_size=512, num_layers=1,
                                          bidirectional=True)),
        ("gru-512-1024-2l", nn.GRU, dict(input_size=512, hidden_size=1024, num_layers=2)),
        ("rnn-128-256", nn.RNN, dict(input_size=128, hidden_size=256, num_layers=1)),
    ]:
        with torch.device("meta"):
            m = cls(**cfg)
        add(name, f"torch.nn.{cls.__name__}", cfg, m, rnn_note)

    tnote = ("nn.Transformer: post-norm, ReLU, biases everywhere, plus final encoder and decoder "
             "LayerNorms (nn.Transformer adds them); no embeddings or output projection")
    for name, kw in [
        ("transformer-base", dict(d_model=512, nhead=8, num_encoder_layers=6,
                                  num_decoder_layers=6, dim_feedforward=2048)),
        ("transformer-big", dict(d_model=1024, nhead=16, num_encoder_layers=6,
                                 num_decoder_layers=6, dim_feedforward=4096)),
    ]:
        with torch.device("meta"):
            m = nn.Transformer(**kw)
        add(name + "-body", "torch.nn.Transformer", kw, m, tnote)
        with torch.device("meta"):
            m = TiedSeq2SeqTransformer(37000, **kw)
        add(name, "torch.nn.Transformer+Embedding(tied)", dict(kw, vocab_size=37000), m,
            "Vaswani et al. 2017 " + name.split("-")[1] + " model: nn.Transformer + one "
            "nn.Embedding(37000, d_model) shared between source embedding, target embedding and "
            "the bias-free pre-softmax projection (counted once); sinusoidal positions (no params)")
    return out


# ----------------------------------------------------------------------------
# torchvision
# ----------------------------------------------------------------------------

TV_MODELS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg11", "vgg13",
             "vgg16", "vgg19", "vgg16_bn", "vit_b_16", "vit_b_32", "vit_l_16", "vit_h_14",
             "wide_resnet50_2", "resnext50_32x4d"]


def torchvision_entries():
    import torchvision
    from torchvision import models as tvm

    lib = f"torchvision {torchvision.__version__.split('+')[0]}"
    out = []
    for name in TV_MODELS:
        with torch.device("meta"):
            m = getattr(tvm, name)(weights=None)
        n = count(m)
        cfg = dict(weights=None, num_classes=1000)
        notes = f"torchvision.models.{name}(weights=None) defaults"
        if name.startswith("vgg"):
            notes += "; classifier 25088->4096->4096->1000 after AdaptiveAvgPool(7x7)"
        if name.startswith("vit"):
            notes += "; class token + learned positions; image_size 224 default (vit_h_14 too)"
        out.append(dict(name=name, library=lib, **{"class": type(m).__name__}, config=cfg,
                        params=n, notes=notes + "; " + tie_note(m)))
        print(f"{name:24s} {type(m).__name__:32s} {n:>16,d}", flush=True)
    return out


# ----------------------------------------------------------------------------
# FLOPs (FlopCounterMode, CPU, real tensors)
# ----------------------------------------------------------------------------

def _flops(model, run_forward, loss_fn):
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()  # dropout off; BatchNorm/Dropout do not contribute matmul/conv FLOPs anyway
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            run_forward()
    fwd = fc.get_total_flops()
    fwd_ops = {str(k): int(v) for k, v in fc.get_flop_counts()["Global"].items()}
    with FlopCounterMode(display=False) as fc2:
        out = run_forward()
        loss_fn(out).backward()
    fb = fc2.get_total_flops()
    fb_ops = {str(k): int(v) for k, v in fc2.get_flop_counts()["Global"].items()}
    return int(fwd), fwd_ops, int(fb), fb_ops


def hf_flops_entries():
    import transformers as tf

    out = []
    torch.manual_seed(0)
    B, S = 1, 128
    ids = torch.randint(0, 1000, (B, S))

    cfg = tf.GPT2Config(**dict(GPT2_COMMON, **GPT2_SIZES["gpt2"]))
    cfg._attn_implementation = "eager"
    m = tf.GPT2LMHeadModel(cfg)
    assert m.config._attn_implementation == "eager"
    fwd, fo, fb, fbo = _flops(m, lambda: m(input_ids=ids, use_cache=False).logits,
                              lambda y: y.sum())
    out.append(dict(name="gpt2", **{"class": "GPT2LMHeadModel"}, batch=B, seq=S, image=None,
                    forward_flops=fwd, forward_backward_flops=fb, by_op=fo,
                    by_op_forward_backward=fbo, torch=TORCH_VERSION,
                    library=f"transformers {tf.__version__}",
                    notes=("FlopCounterMode counts only matmul-like ops (mm/addmm/bmm/baddbmm/conv/"
                           "sdpa) at 2 FLOPs per MAC; eager attention (Q@K^T and P@V as bmm); "
                           "GPT-2 Conv1D linears are addmm; includes the tied LM head "
                           "(768 x 50257); backward of loss=logits.sum(), grads for all weights "
                           "and activations (embedding backward is not a matmul, not counted); "
                           "forward_backward_flops = forward + backward in one run")))
    print("gpt2 flops", fwd, fb, flush=True)
    del m

    cfg = tf.BertConfig(**BERT_BASE)
    cfg._attn_implementation = "eager"
    m = tf.BertModel(cfg)
    assert m.config._attn_implementation == "eager"

    def bert_fwd():
        o = m(input_ids=ids)
        return o.last_hidden_state, o.pooler_output

    fwd, fo, fb, fbo = _flops(m, bert_fwd, lambda y: y[0].sum() + y[1].sum())
    out.append(dict(name="bert-base", **{"class": "BertModel"}, batch=B, seq=S, image=None,
                    forward_flops=fwd, forward_backward_flops=fb, by_op=fo,
                    by_op_forward_backward=fbo, torch=TORCH_VERSION,
                    library=f"transformers {tf.__version__}",
                    notes=("BertModel with pooler (pooler runs on the CLS token only: 768x768); "
                           "eager attention; FlopCounterMode matmul-like ops only, 2 FLOPs/MAC; "
                           "backward of loss=last_hidden_state.sum()+pooler_output.sum()")))
    print("bert flops", fwd, fb, flush=True)
    return out


def tv_flops_entries():
    import torchvision
    from torchvision import models as tvm

    torch.manual_seed(0)
    m = tvm.resnet50(weights=None)
    x = torch.randn(1, 3, 224, 224)
    fwd, fo, fb, fbo = _flops(m, lambda: m(x), lambda y: y.sum())
    print("resnet50 flops", fwd, fb, flush=True)
    return [dict(name="resnet50", **{"class": "ResNet"}, batch=1, seq=None, image=224,
                 forward_flops=fwd, forward_backward_flops=fb, by_op=fo,
                 by_op_forward_backward=fbo, torch=torch.__version__.split("+")[0],
                 library=f"torchvision {torchvision.__version__.split('+')[0]}",
                 notes=("torchvision resnet50(weights=None), input 1x3x224x224; FlopCounterMode "
                        "counts convolution + addmm (fc) only, 2 FLOPs/MAC; BN/ReLU/pool/add not "
                        "counted; backward of loss=logits.sum(); the first conv's input-gradient "
                        "is not computed (input does not require grad)"))]


# ----------------------------------------------------------------------------

def merge(path, new, key):
    old = []
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    newkeys = {key(e) for e in new}
    merged = [e for e in old if key(e) not in newkeys]
    # keep original order where possible: replace in place, append new
    byk = {key(e): e for e in new}
    result = []
    seen = set()
    for e in old:
        k = key(e)
        if k in byk:
            result.append(byk[k])
            seen.add(k)
        else:
            result.append(e)
    result += [e for e in new if key(e) not in seen]
    del merged
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {path}: {len(result)} entries", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", default="transformers,nn,torchvision,flops")
    args = ap.parse_args()
    groups = set(args.groups.split(","))
    params, flops = [], []
    if "transformers" in groups:
        try:
            params += transformers_entries()
        except ImportError as e:
            print("skipping transformers:", e)
    if "nn" in groups:
        params += nn_entries()
    if "torchvision" in groups:
        try:
            params += torchvision_entries()
        except ImportError as e:
            print("skipping torchvision:", e)
    if "flops" in groups:
        try:
            flops += hf_flops_entries()
        except ImportError as e:
            print("skipping HF flops:", e)
        try:
            flops += tv_flops_entries()
        except ImportError as e:
            print("skipping torchvision flops:", e)
    if params:
        merge(PARAMS_PATH, params, lambda e: (e["name"], e["class"]))
    if flops:
        merge(FLOPS_PATH, flops, lambda e: (e["name"], e["class"]))


if __name__ == "__main__":
    sys.exit(main())
