"""Bring your own model: a Hugging Face ``config.json`` -> a model spec.

Supported families (``model_type``) and the classes whose parameters the spec
reproduces exactly (``architectures[0]``; without it, the bare ``*Model``):

    bert        BertModel, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification
    roberta     RobertaModel, RobertaForMaskedLM
    distilbert  DistilBertModel, DistilBertForMaskedLM
    gpt2        GPT2Model, GPT2LMHeadModel
    gpt_neox    GPTNeoXModel, GPTNeoXForCausalLM
    llama, mistral, qwen2, gemma   *Model, *ForCausalLM
    opt         OPTModel, OPTForCausalLM (incl. OPT-350m's project_in/out, post-norm)
    gptj        GPTJModel, GPTJForCausalLM
    codegen     CodeGenModel, CodeGenForCausalLM
    gpt_neo     GPTNeoModel, GPTNeoForCausalLM
    falcon      FalconModel, FalconForCausalLM (multi-query, new_decoder_architecture, ALiBi)
    phi         PhiModel, PhiForCausalLM
    stablelm    StableLmModel, StableLmForCausalLM
    bloom       BloomModel, BloomForCausalLM
    t5          T5Model, T5ForConditionalGeneration, T5EncoderModel
    bart        BartModel, BartForConditionalGeneration
    vit         ViTModel, ViTForImageClassification

Each mapping follows the module layout of the transformers implementation
(``modeling_<family>.py``); tests/test_hf.py checks every count against
``sum(p.numel() for p in model.parameters())`` recorded in
tests/data/reference_params.json and tests/data/hf_configs/extra/extra_params.json
(transformers 5.24.0, meta-device builds), and forward matmul FLOPs against
torch's FlopCounterMode (tests/data/hf_configs/extra/hf_flops.json).

Mixture-of-experts families (Mixtral, Qwen2-MoE, ...) and MoE fields in a
dense family are refused: the schema has no expert layers, and a dense
estimate would be wrong by the expert count.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

from .errors import CostModelError, suggest

MAX_CONFIG_BYTES = 1024 * 1024

HF_LIBRARY = "transformers"


class _Cfg:
    """Config access that names the file and field on every error."""

    def __init__(self, data: dict, file: str, lines: dict[str, int]):
        self.d = data
        self.file = file
        self.lines = lines

    def err(self, field: str | None, msg: str) -> CostModelError:
        return CostModelError(msg, file=self.file, line=self.lines.get(field or "", None), field=field)

    def get(self, *names: str, default: Any = None, kind: type | tuple = (int,)) -> Any:
        for n in names:
            if n in self.d and self.d[n] is not None:
                v = self.d[n]
                if kind is bool:
                    if not isinstance(v, bool):
                        raise self.err(n, f"expected true or false (got {v!r})")
                elif isinstance(v, bool) or not isinstance(v, kind):
                    want = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
                    raise self.err(n, f"expected {want} (got {v!r})")
                if kind == (int,) and v <= 0:
                    raise self.err(n, f"expected a positive integer (got {v!r})")
                return v
        return default

    def need(self, *names: str, kind: type | tuple = (int,)) -> Any:
        v = self.get(*names, kind=kind)
        if v is None:
            raise self.err(None, f"missing field {names[0]!r}" + (f" (or {', '.join(names[1:])})" if names[1:] else ""))
        return v

    def flt(self, *names: str, default: float = 0.0) -> float:
        v = self.get(*names, kind=(int, float))
        return float(default if v is None else v)


def _lines_of(text: str) -> dict[str, int]:
    """Line of each top-level key (for error messages)."""
    out: dict[str, int] = {}
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith('"'):
            k = s[1:].split('"', 1)[0]
            out.setdefault(k, i)
    return out


def read_config(path: str) -> _Cfg:
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise CostModelError(f"cannot read file ({e.strerror})", file=path) from None
    if size > MAX_CONFIG_BYTES:
        raise CostModelError(f"file is {size / 1e6:.1f} MB (expected a config.json of a few KB)", file=path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise CostModelError("file is not UTF-8 text", file=path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CostModelError(f"invalid JSON: {e.msg} (column {e.colno})", file=path, line=e.lineno) from None
    except RecursionError:
        raise CostModelError("invalid JSON: nested too deeply", file=path) from None
    if not isinstance(data, dict):
        raise CostModelError("expected a JSON object (a Hugging Face config.json)", file=path, line=1)
    return _Cfg(data, path, _lines_of(text))


def _name(path: str, c: _Cfg) -> str:
    n = c.d.get("_name_or_path")
    if isinstance(n, str) and n.strip():
        return n.strip().rstrip("/").split("/")[-1]
    base = os.path.basename(path)
    if base == "config.json":
        parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
        return parent or "hf-model"
    return os.path.splitext(base)[0]


def _arch(c: _Cfg, family: str, known: dict[str, dict]) -> tuple[str, dict]:
    archs = c.d.get("architectures")
    if archs is None:
        base = next(iter(known))
        return base, known[base]
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise c.err("architectures", f"expected a list of class names (got {archs!r})")
    a = archs[0]
    if a not in known:
        raise c.err("architectures", f"{a!r} is not supported for model_type {family!r}{suggest(a, known)} "
                                     f"(expected one of: {', '.join(known)})")
    return a, known[a]


def _act(c: _Cfg, *names: str, default: str = "gelu") -> str:
    a = c.get(*names, kind=str) or default
    table = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu_fast": "gelu_new",
             "quick_gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu", "gelu_python": "gelu"}
    if a not in table:
        raise c.err(names[0], f"activation {a!r} is not supported (expected one of: {', '.join(table)})")
    return table[a]


def _dropout(c: _Cfg, *names: str) -> float:
    for n in names:
        v = c.d.get(n)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v) if 0 <= v < 1 else 0.0
    return 0.0


def _decoder_seq(max_pos: int) -> int:
    # train / prompt length used when none is given: the model's context, capped
    # at 4096 (Qwen2 and Mistral configs declare 32k-128k positions)
    return min(max_pos, 4096)


# --- families -----------------------------------------------------------------
def _bert_like(c: _Cfg, family: str) -> dict:
    """BERT / RoBERTa (modeling_bert.py, modeling_roberta.py): learned absolute
    positions, token types, embedding LayerNorm, post-norm layers with biases.
    RoBERTa positions start at padding_idx + 1, so its table has
    max_position_embeddings rows of which padding_idx + 1 are never used."""
    heads_known = {
        "bert": {"BertModel": dict(pooler=True), "BertForMaskedLM": dict(mlm=True),
                 "BertForPreTraining": dict(pooler=True, mlm=True, classes=2),
                 "BertForSequenceClassification": dict(pooler=True, classes="labels")},
        "roberta": {"RobertaModel": dict(pooler=True), "RobertaForMaskedLM": dict(mlm=True)},
    }[family]
    cls, head = _arch(c, family, heads_known)
    d = c.need("hidden_size")
    rows = c.need("max_position_embeddings")
    offset = 0
    if family == "roberta":      # create_position_ids_from_input_ids: positions start at padding_idx + 1
        pad = c.d.get("pad_token_id", 1)
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise c.err("pad_token_id", f"expected a non-negative integer (got {pad!r})")
        offset = pad + 1
        if rows <= offset:
            raise c.err("max_position_embeddings", f"{rows} rows leave no positions after the padding offset "
                                                   f"{offset} (expected > {offset})")
    spec = dict(
        arch="transformer", structure="encoder", layers=c.need("num_hidden_layers"), d_model=d,
        heads=c.need("num_attention_heads"), d_ff=c.need("intermediate_size"), vocab_size=c.need("vocab_size"),
        max_positions=rows - offset, position_offset=offset, default_seq=min(rows - offset, 512),
        position="learned", token_types=_token_types(c, 2 if family == "bert" else 1), embedding_norm=True, norm="layernorm", norm_position="post", final_norm=False,
        activation=_act(c, "hidden_act"), tied_embeddings=True, lm_head=bool(head.get("mlm")),
        lm_head_transform=bool(head.get("mlm")), pooler=bool(head.get("pooler")),
        num_classes=_classes(c, head.get("classes")), dropout=_dropout(c, "hidden_dropout_prob"),
        biases=dict(qkv=True, attn_out=True, ffn=True, lm_head=bool(head.get("mlm"))),
    )
    return _with_ref(spec, cls)


def _token_types(c: _Cfg, default: int) -> int:
    v = c.d.get("type_vocab_size", default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise c.err("type_vocab_size", f"expected a non-negative integer (got {v!r})")
    return v


def _classes(c: _Cfg, what) -> int:
    if what is None:
        return 0
    if what == "labels":
        n = c.get("num_labels", kind=(int,))
        if n is None and isinstance(c.d.get("id2label"), dict):
            n = len(c.d["id2label"])
        return n or 2            # PretrainedConfig default: 2 labels
    return int(what)


def _distilbert(c: _Cfg) -> dict:
    """DistilBERT (modeling_distilbert.py): word + position embeddings (the
    position table is a parameter even when sinusoidal_pos_embds fills it),
    LayerNorm, post-norm layers with biases, no token types, no pooler."""
    cls, head = _arch(c, "distilbert", {"DistilBertModel": {}, "DistilBertForMaskedLM": dict(mlm=True)})
    mlm = bool(head.get("mlm"))
    rows = c.need("max_position_embeddings")
    return _with_ref(dict(
        arch="transformer", structure="encoder", layers=c.need("n_layers"), d_model=c.need("dim"),
        heads=c.need("n_heads"), d_ff=c.need("hidden_dim"), vocab_size=c.need("vocab_size"), max_positions=rows,
        default_seq=min(rows, 512), position="learned", token_types=0, embedding_norm=True, norm="layernorm",
        norm_position="post", final_norm=False, activation=_act(c, "activation"), tied_embeddings=True,
        lm_head=mlm, lm_head_transform=mlm, biases=dict(qkv=True, attn_out=True, ffn=True, lm_head=mlm),
        dropout=_dropout(c, "dropout")), cls)


def _gpt2(c: _Cfg) -> dict:
    """GPT-2 (modeling_gpt2.py): learned positions, pre-norm, Conv1D layers
    with biases, final LayerNorm, LM head tied to wte unless
    tie_word_embeddings is false."""
    cls, head = _arch(c, "gpt2", {"GPT2Model": {}, "GPT2LMHeadModel": dict(lm=True)})
    d = c.need("n_embd", "hidden_size")
    pos = c.need("n_positions", "max_position_embeddings")
    tied = c.get("tie_word_embeddings", default=True, kind=bool)
    return _with_ref(dict(
        arch="transformer", structure="decoder", layers=c.need("n_layer", "num_hidden_layers"), d_model=d,
        heads=c.need("n_head", "num_attention_heads"), d_ff=c.get("n_inner", kind=(int,)) or 4 * d,
        vocab_size=c.need("vocab_size"), max_positions=pos, default_seq=pos, position="learned", norm="layernorm",
        norm_position="pre", final_norm=True, activation=_act(c, "activation_function", default="gelu_new"),
        tied_embeddings=tied, lm_head=bool(head.get("lm")), dropout=_dropout(c, "resid_pdrop")), cls)


def _neox(c: _Cfg) -> dict:
    """GPT-NeoX / Pythia (modeling_gpt_neox.py): rotary on rotary_pct of each
    head, parallel residual, LayerNorms with bias, fused qkv and dense with
    attention_bias, MLP with biases, untied embed_out."""
    cls, head = _arch(c, "gpt_neox", {"GPTNeoXModel": {}, "GPTNeoXForCausalLM": dict(lm=True)})
    pos = c.need("max_position_embeddings")
    bias = c.get("attention_bias", default=True, kind=bool)
    return _with_ref(dict(
        arch="transformer", structure="decoder", layers=c.need("num_hidden_layers"), d_model=c.need("hidden_size"),
        heads=c.need("num_attention_heads"), d_ff=c.need("intermediate_size"), vocab_size=c.need("vocab_size"),
        max_positions=pos, default_seq=_decoder_seq(pos), position="rotary",
        rotary_fraction=c.flt("rotary_pct", "partial_rotary_factor", default=1.0),
        parallel_residual=c.get("use_parallel_residual", default=True, kind=bool), norm="layernorm",
        norm_position="pre", final_norm=True, activation=_act(c, "hidden_act"),
        biases=dict(qkv=bias, attn_out=bias, ffn=True, lm_head=False),
        tied_embeddings=c.get("tie_word_embeddings", default=False, kind=bool), lm_head=bool(head.get("lm")),
        dropout=_dropout(c, "hidden_dropout")), cls)


def _llama_like(c: _Cfg, family: str) -> dict:
    """Llama / Mistral / Qwen2 / Gemma (modeling_llama.py and descendants):
    RMSNorm, rotary, SwiGLU MLP, GQA via num_key_value_heads. Biases: Llama
    attention_bias on q, k, v and o; Qwen2 on q, k, v only; mlp_bias on the MLP.
    Gemma (modeling_gemma.py): GeGLU (tanh GELU; its legacy "gelu" means that
    too), embeddings scaled by sqrt(hidden_size), RMSNorm weight applied as
    (1 + w) (same parameter count), LM head tied by default."""
    prefix = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "gemma": "Gemma"}[family]
    cls, head = _arch(c, family, {f"{prefix}Model": {}, f"{prefix}ForCausalLM": dict(lm=True)})
    d = c.need("hidden_size")
    heads = c.need("num_attention_heads")
    pos = c.need("max_position_embeddings")
    if family == "qwen2":
        qkv, out = True, False
    else:
        qkv = out = c.get("attention_bias", default=False, kind=bool)
    act = c.get("hidden_act", "hidden_activation", kind=str) or ("gelu_pytorch_tanh" if family == "gemma" else "silu")
    if act not in ("silu", "swish", "gelu", "gelu_pytorch_tanh"):
        raise c.err("hidden_act", f"activation {act!r} is not supported (expected silu or gelu)")
    spec = dict(
        arch="transformer", structure="decoder", layers=c.need("num_hidden_layers"), d_model=d, heads=heads,
        kv_heads=c.get("num_key_value_heads", kind=(int,)) or heads, d_ff=c.need("intermediate_size"),
        vocab_size=c.need("vocab_size"), max_positions=pos, default_seq=_decoder_seq(pos), position="rotary",
        rotary_fraction=_rotary_fraction(c), norm="rmsnorm", norm_bias=False,
        norm_position="pre", final_norm=True, activation="swiglu" if act in ("silu", "swish") else "geglu",
        biases=dict(qkv=qkv, attn_out=out, ffn=c.get("mlp_bias", default=False, kind=bool), lm_head=False),
        tied_embeddings=c.get("tie_word_embeddings", default=family == "gemma", kind=bool),
        lm_head=bool(head.get("lm")), dropout=_dropout(c, "attention_dropout"))
    if family == "gemma":
        spec["embed_scale"] = True
    hd = c.get("head_dim", kind=(int,))
    if hd and hd != d // heads:
        spec["d_head"] = hd
    window = c.get("sliding_window", kind=(int,))
    if window and (family == "mistral" or c.d.get("use_sliding_window")) and window < pos:
        spec["notes"] = (f"sliding_window {window}: attention is modelled as full causal attention, exact for "
                         f"sequences up to {window} tokens, an overestimate beyond")
    return _with_ref(spec, cls)


def _t5(c: _Cfg) -> dict:
    """T5 (modeling_t5.py): shared token embedding, relative position bias
    table in layer 0 of each stack, RMS-style LayerNorm without bias, no
    linear biases; feed_forward_proj 'relu' (v1.0) or 'gated-gelu' (v1.1,
    wi_0/wi_1). transformers 5 ties lm_head to the shared embedding always
    (T5Config forces tie_word_embeddings = True and keeps the old flag only
    as scale_decoder_outputs); transformers 4 left it untied for v1.1
    checkpoints (tie_word_embeddings: false), vocab x d_model more parameters."""
    cls, head = _arch(c, "t5", {"T5Model": dict(dec=True), "T5ForConditionalGeneration": dict(dec=True, lm=True),
                                "T5EncoderModel": {}})
    ff = c.get("feed_forward_proj", kind=str) or "relu"
    acts = {"relu": "relu", "gated-gelu": "geglu", "gated-relu": None, "gelu": "gelu", "gated-silu": "swiglu"}
    if acts.get(ff) is None:
        raise c.err("feed_forward_proj", f"{ff!r} is not supported (expected relu, gelu, gated-gelu or gated-silu)")
    layers = c.need("num_layers")
    enc_dec = bool(head.get("dec"))
    spec = dict(
        arch="transformer", structure="encoder-decoder" if enc_dec else "encoder", layers=layers,
        d_model=c.need("d_model"), heads=c.need("num_heads"), d_head=c.need("d_kv"), d_ff=c.need("d_ff"),
        vocab_size=c.need("vocab_size"), max_positions=c.get("n_positions", kind=(int,)) or 512, default_seq=512,
        position="relative_bias", relative_buckets=c.get("relative_attention_num_buckets", default=32, kind=(int,)),
        norm="rmsnorm", norm_bias=False, norm_position="pre", final_norm=True, activation=acts[ff],
        biases=dict(qkv=False, attn_out=False, ffn=False, lm_head=False),
        tied_embeddings=True, lm_head=bool(head.get("lm")), dropout=_dropout(c, "dropout_rate"))
    if enc_dec:
        spec["decoder_layers"] = c.get("num_decoder_layers", kind=(int,)) or layers
    return _with_ref(spec, cls)


def _bart(c: _Cfg) -> dict:
    """BART (modeling_bart.py): learned positions with an offset of 2 rows,
    layernorm_embedding in both stacks, post-norm layers with biases, no final
    LayerNorm, lm_head tied to the shared embedding (final_logits_bias is a buffer)."""
    cls, head = _arch(c, "bart", {"BartModel": {}, "BartForConditionalGeneration": dict(lm=True)})
    for a, b in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if c.d.get(b) is not None and c.d.get(a) != c.d.get(b):
            raise c.err(b, f"differs from {a} ({c.d.get(b)} vs {c.d.get(a)}): the schema has one value for "
                           "both stacks (expected equal values)")
    if c.get("add_final_layer_norm", default=False, kind=bool) or c.get("normalize_before", default=False, kind=bool):
        raise c.err("normalize_before", "pre-norm BART variants (mBART) are not supported")
    pos = c.need("max_position_embeddings")
    return _with_ref(dict(
        arch="transformer", structure="encoder-decoder", layers=c.need("encoder_layers"),
        decoder_layers=c.get("decoder_layers", kind=(int,)) or c.need("encoder_layers"), d_model=c.need("d_model"),
        heads=c.need("encoder_attention_heads"), d_ff=c.need("encoder_ffn_dim"), vocab_size=c.need("vocab_size"),
        max_positions=pos, default_seq=min(pos, 512), position="learned", position_offset=2, embedding_norm=True,
        norm="layernorm", norm_position="post", final_norm=False,
        activation=_act(c, "activation_function"), tied_embeddings=c.get("tie_word_embeddings", default=True,
                                                                           kind=bool),
        lm_head=bool(head.get("lm")), dropout=_dropout(c, "dropout")), cls)


def _vit(c: _Cfg) -> dict:
    """ViT (modeling_vit.py): conv patch embedding with bias, class token,
    learned position embeddings, pre-norm layers, final LayerNorm; ViTModel
    adds a pooler (dense + tanh), ViTForImageClassification a classifier."""
    cls, head = _arch(c, "vit", {"ViTModel": dict(pooler=True), "ViTForImageClassification": dict(classes="labels")})
    if _act(c, "hidden_act") not in ("gelu", "gelu_new"):
        raise c.err("hidden_act", "only GELU ViTs are supported")
    return _with_ref(dict(
        arch="vit", image_size=c.get("image_size", default=224, kind=(int,)),
        patch_size=c.get("patch_size", default=16, kind=(int,)), channels=c.get("num_channels", default=3, kind=(int,)),
        layers=c.need("num_hidden_layers"), d_model=c.need("hidden_size"), heads=c.need("num_attention_heads"),
        d_ff=c.need("intermediate_size"), num_classes=_classes(c, head.get("classes")),
        pooler=bool(head.get("pooler")), qkv_bias=c.get("qkv_bias", default=True, kind=bool),
        dropout=_dropout(c, "hidden_dropout_prob")), cls)


def _rotary_fraction(c: _Cfg, default: float = 1.0) -> float:
    """partial_rotary_factor, top level (hub configs) or inside rope_parameters
    (transformers 5 configs)."""
    rp = c.d.get("rope_parameters")
    if isinstance(rp, dict) and rp.get("partial_rotary_factor") is not None:
        v = rp["partial_rotary_factor"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise c.err("rope_parameters", f"partial_rotary_factor: expected a number in (0, 1] (got {v!r})")
        return float(v)
    v = c.flt("partial_rotary_factor", default=default)
    if not 0 < v <= 1:
        raise c.err("partial_rotary_factor", f"expected a number in (0, 1] (got {v!r})")
    return v


def _rotary_dims_fraction(c: _Cfg, field: str, head_dim: int) -> float:
    """GPT-J / CodeGen rotary_dim (dims per head) as a fraction of head_dim
    such that int(head_dim * fraction) gives rotary_dim back exactly."""
    rd = c.get(field, kind=(int,))
    if rd is None or rd >= head_dim:
        return 1.0
    f = rd / head_dim
    while int(head_dim * f) < rd:
        f = math.nextafter(f, 1.0)
    return f


def _reject_qk_norm(c: _Cfg) -> None:
    if c.get("qk_layernorm", default=False, kind=bool):
        raise c.err("qk_layernorm", "qk_layernorm (a LayerNorm on queries and keys) is not modelled "
                                    "(expected false)")


def _opt(c: _Cfg) -> dict:
    """OPT (modeling_opt.py; Zhang et al. 2022): learned positions with an
    offset of 2 rows, ReLU MLP, biases everywhere (enable_bias) but the LM
    head, pre-norm with a final LayerNorm (do_layer_norm_before) or post-norm
    without one (OPT-350m), LM head tied to embed_tokens. word_embed_proj_dim
    != hidden_size (OPT-350m): the token table is that wide, project_in and
    project_out (no bias) convert."""
    cls, head = _arch(c, "opt", {"OPTModel": {}, "OPTForCausalLM": dict(lm=True)})
    d = c.need("hidden_size")
    pos = c.need("max_position_embeddings")
    if not c.get("layer_norm_elementwise_affine", default=True, kind=bool):
        raise c.err("layer_norm_elementwise_affine", "LayerNorms without weights are not modelled (expected true)")
    pre = c.get("do_layer_norm_before", default=True, kind=bool)
    bias = c.get("enable_bias", default=True, kind=bool)
    spec = dict(
        arch="transformer", structure="decoder", layers=c.need("num_hidden_layers"), d_model=d,
        heads=c.need("num_attention_heads"), d_ff=c.need("ffn_dim"), vocab_size=c.need("vocab_size"),
        max_positions=pos, position_offset=2, default_seq=_decoder_seq(pos), position="learned", norm="layernorm",
        norm_position="pre" if pre else "post",
        final_norm=pre and not c.get("_remove_final_layer_norm", default=False, kind=bool),
        activation=_act(c, "activation_function", default="relu"),
        biases=dict(qkv=bias, attn_out=bias, ffn=bias, lm_head=False),
        tied_embeddings=c.get("tie_word_embeddings", default=True, kind=bool), lm_head=bool(head.get("lm")),
        dropout=_dropout(c, "dropout"))
    e = c.get("word_embed_proj_dim", kind=(int,)) or d
    if e != d:
        spec["embed_dim"] = e
    return _with_ref(spec, cls)


def _gptj(c: _Cfg, family: str) -> dict:
    """GPT-J (modeling_gptj.py) and CodeGen (modeling_codegen.py, the same
    layout with a fused qkv_proj of the same size): one LayerNorm ln_1 read
    by attention and MLP in parallel (x + attn(ln(x)) + mlp(ln(x))), rotary
    on rotary_dim dims of each head, no attention biases, MLP with biases,
    final LayerNorm, LM head with bias (untied unless tie_word_embeddings)."""
    prefix = {"gptj": "GPTJ", "codegen": "CodeGen"}[family]
    cls, head = _arch(c, family, {f"{prefix}Model": {}, f"{prefix}ForCausalLM": dict(lm=True)})
    d = c.need("n_embd", "hidden_size")
    heads = c.need("n_head", "num_attention_heads")
    pos = c.need("n_positions", "max_position_embeddings")
    lm = bool(head.get("lm"))
    if d % heads:
        raise c.err("n_head", f"{heads} heads do not divide n_embd {d} (expected a divisor of {d})")
    return _with_ref(dict(
        arch="transformer", structure="decoder", layers=c.need("n_layer", "num_hidden_layers"), d_model=d,
        heads=heads, d_ff=c.get("n_inner", kind=(int,)) or 4 * d, vocab_size=c.need("vocab_size"),
        max_positions=pos, default_seq=_decoder_seq(pos), position="rotary",
        rotary_fraction=_rotary_dims_fraction(c, "rotary_dim", d // heads), parallel_residual=True,
        shared_norm=True, norm="layernorm", norm_position="pre", final_norm=True,
        activation=_act(c, "activation_function", default="gelu_new"),
        biases=dict(qkv=False, attn_out=False, ffn=True, lm_head=lm),
        tied_embeddings=c.get("tie_word_embeddings", default=False, kind=bool), lm_head=lm,
        dropout=_dropout(c, "resid_pdrop")), cls)


def _gpt_neo(c: _Cfg) -> dict:
    """GPT-Neo (modeling_gpt_neo.py): GPT-2 layout with learned positions,
    q/k/v without bias, out_proj with bias, unscaled attention scores, and
    alternating global / local (window_size) attention layers. HF computes a
    local layer as full causal attention under a banded mask, so parameters
    and FLOPs are those of full attention."""
    cls, head = _arch(c, "gpt_neo", {"GPTNeoModel": {}, "GPTNeoForCausalLM": dict(lm=True)})
    d = c.need("hidden_size")
    pos = c.need("max_position_embeddings")
    spec = dict(
        arch="transformer", structure="decoder", layers=c.need("num_layers", "num_hidden_layers"), d_model=d,
        heads=c.need("num_heads", "num_attention_heads"), d_ff=c.get("intermediate_size", kind=(int,)) or 4 * d,
        vocab_size=c.need("vocab_size"), max_positions=pos, default_seq=_decoder_seq(pos), position="learned",
        norm="layernorm", norm_position="pre", final_norm=True,
        activation=_act(c, "activation_function", default="gelu_new"),
        biases=dict(qkv=False, attn_out=True, ffn=True, lm_head=False),
        tied_embeddings=c.get("tie_word_embeddings", default=True, kind=bool), lm_head=bool(head.get("lm")),
        dropout=_dropout(c, "resid_dropout"))
    window = c.get("window_size", kind=(int,))
    if window and window < pos:
        spec["notes"] = (f"local attention layers (window_size {window}) run as full causal attention under a "
                         f"banded mask, as Hugging Face computes them: FLOPs of full attention")
    return _with_ref(spec, cls)


def _falcon(c: _Cfg) -> dict:
    """Falcon (modeling_falcon.py): fused query_key_value (multi_query: one
    K/V head; new_decoder_architecture: num_kv_heads), rotary or ALiBi,
    biases on every linear or none (bias), parallel attention with one shared
    input_layernorm (7B) or two (ln_attn/ln_mlp: new_decoder_architecture,
    40B/180B), or sequential with two LayerNorms (parallel_attn false),
    final LayerNorm, LM head tied to word_embeddings."""
    cls, head = _arch(c, "falcon", {"FalconModel": {}, "FalconForCausalLM": dict(lm=True)})
    d = c.need("hidden_size")
    heads = c.need("num_attention_heads", "n_head")
    new = c.get("new_decoder_architecture", default=False, kind=bool)
    parallel = c.get("parallel_attn", default=True, kind=bool)
    n_ln = c.get("num_ln_in_parallel_attn", kind=(int,))
    if new:
        kv = c.get("num_kv_heads", kind=(int,)) or heads
        if not parallel:
            raise c.err("parallel_attn", "new_decoder_architecture without parallel_attn does not run in "
                                         "transformers (expected true)")
        n_ln = n_ln or 2
    else:
        kv = 1 if c.get("multi_query", default=True, kind=bool) else heads
        if parallel and n_ln == 2:
            raise c.err("num_ln_in_parallel_attn", "2 LayerNorms need new_decoder_architecture (expected 1)")
        n_ln = 1
    if n_ln not in (1, 2):
        raise c.err("num_ln_in_parallel_attn", f"expected 1 or 2 (got {n_ln})")
    if c.get("apply_residual_connection_post_layernorm", default=False, kind=bool):
        raise c.err("apply_residual_connection_post_layernorm", "not modelled (expected false)")
    alibi = c.get("alibi", default=False, kind=bool)
    bias = c.get("bias", default=False, kind=bool)
    pos = c.get("max_position_embeddings", default=2048, kind=(int,))
    return _with_ref(dict(
        arch="transformer", structure="decoder", layers=c.need("num_hidden_layers", "n_layer"), d_model=d,
        heads=heads, kv_heads=kv, d_ff=c.get("ffn_hidden_size", kind=(int,)) or 4 * d,
        vocab_size=c.need("vocab_size"), max_positions=pos, default_seq=_decoder_seq(pos),
        position="alibi" if alibi else "rotary", parallel_residual=parallel,
        shared_norm=parallel and n_ln == 1, norm="layernorm", norm_position="pre", final_norm=True,
        activation=_act(c, "activation", default="gelu"),
        biases=dict(qkv=bias, attn_out=bias, ffn=bias, lm_head=False),
        tied_embeddings=c.get("tie_word_embeddings", default=True, kind=bool), lm_head=bool(head.get("lm")),
        dropout=_dropout(c, "hidden_dropout")), cls)


def _phi(c: _Cfg) -> dict:
    """Phi-1/1.5/2 (modeling_phi.py): one input_layernorm read by attention
    and MLP in parallel, partial rotary (partial_rotary_factor), biases on
    q/k/v/dense and the MLP, final LayerNorm, LM head with bias, untied."""
    cls, head = _arch(c, "phi", {"PhiModel": {}, "PhiForCausalLM": dict(lm=True)})
    _reject_qk_norm(c)
    d = c.need("hidden_size")
    heads = c.need("num_attention_heads")
    pos = c.need("max_position_embeddings")
    lm = bool(head.get("lm"))
    spec = dict(
        arch="transformer", structure="decoder", layers=c.need("num_hidden_layers"), d_model=d, heads=heads,
        kv_heads=c.get("num_key_value_heads", kind=(int,)) or heads, d_ff=c.need("intermediate_size"),
        vocab_size=c.need("vocab_size"), max_positions=pos, default_seq=_decoder_seq(pos), position="rotary",
        rotary_fraction=_rotary_fraction(c, default=0.5), parallel_residual=True, shared_norm=True,
        norm="layernorm", norm_position="pre", final_norm=True, activation=_act(c, "hidden_act", default="gelu_new"),
        biases=dict(qkv=True, attn_out=True, ffn=True, lm_head=lm),
        tied_embeddings=c.get("tie_word_embeddings", default=False, kind=bool), lm_head=lm,
        dropout=_dropout(c, "resid_pdrop"))
    hd = c.get("head_dim", kind=(int,))
    if hd and hd != d // heads:
        spec["d_head"] = hd
    return _with_ref(spec, cls)


def _stablelm(c: _Cfg) -> dict:
    """StableLM (modeling_stablelm.py): Llama layout (SwiGLU without biases,
    o_proj without bias) with LayerNorms that have a bias, partial rotary,
    use_qkv_bias on q/k/v, and with use_parallel_residual one shared
    input_layernorm: x + attn(ln(x)) + mlp(ln(x))."""
    cls, head = _arch(c, "stablelm", {"StableLmModel": {}, "StableLmForCausalLM": dict(lm=True)})
    _reject_qk_norm(c)
    heads = c.need("num_attention_heads")
    pos = c.need("max_position_embeddings")
    act = c.get("hidden_act", kind=str) or "silu"
    if act not in ("silu", "swish"):
        raise c.err("hidden_act", f"activation {act!r} is not supported (expected silu)")
    parallel = c.get("use_parallel_residual", default=False, kind=bool)
    return _with_ref(dict(
        arch="transformer", structure="decoder", layers=c.need("num_hidden_layers"), d_model=c.need("hidden_size"),
        heads=heads, kv_heads=c.get("num_key_value_heads", kind=(int,)) or heads, d_ff=c.need("intermediate_size"),
        vocab_size=c.need("vocab_size"), max_positions=pos, default_seq=_decoder_seq(pos), position="rotary",
        rotary_fraction=_rotary_fraction(c, default=0.25), parallel_residual=parallel,
        shared_norm=parallel, norm="layernorm", norm_position="pre", final_norm=True, activation="swiglu",
        biases=dict(qkv=c.get("use_qkv_bias", default=False, kind=bool), attn_out=False, ffn=False, lm_head=False),
        tied_embeddings=c.get("tie_word_embeddings", default=False, kind=bool), lm_head=bool(head.get("lm")),
        dropout=_dropout(c, "hidden_dropout")), cls)


def _bloom(c: _Cfg) -> dict:
    """BLOOM (modeling_bloom.py; BigScience 2022): ALiBi instead of position
    embeddings (no parameters; Press et al. 2022), word_embeddings_layernorm,
    fused query_key_value and all linears with bias, MLP 4*hidden with the
    tanh GELU, pre-norm, final LayerNorm, LM head tied. BLOOM has no position
    limit of its own: max_positions is the 2048-token training context."""
    cls, head = _arch(c, "bloom", {"BloomModel": {}, "BloomForCausalLM": dict(lm=True)})
    if c.get("apply_residual_connection_post_layernorm", default=False, kind=bool):
        raise c.err("apply_residual_connection_post_layernorm", "not modelled (expected false)")
    d = c.need("hidden_size", "n_embed")
    pos = c.get("seq_length", default=2048, kind=(int,))
    return _with_ref(dict(
        arch="transformer", structure="decoder", layers=c.need("n_layer", "num_hidden_layers"), d_model=d,
        heads=c.need("n_head", "num_attention_heads"), d_ff=4 * d, vocab_size=c.need("vocab_size"),
        max_positions=pos, default_seq=_decoder_seq(pos), position="alibi", embedding_norm=True,
        norm="layernorm", norm_position="pre", final_norm=True, activation="gelu_new",
        biases=dict(qkv=True, attn_out=True, ffn=True, lm_head=False),
        tied_embeddings=c.get("tie_word_embeddings", default=True, kind=bool), lm_head=bool(head.get("lm")),
        dropout=_dropout(c, "hidden_dropout")), cls)


# Mixture-of-experts families: refused with the missing feature named.
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "dbrx", "olmoe", "jamba",
                "jetmoe", "granitemoe", "phimoe", "switch_transformers", "nllb_moe", "gpt_oss", "llama4")
MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok")


def _reject_moe(c: _Cfg, mt: str) -> None:
    hit = next((f for f in MOE_FIELDS[:-1] if isinstance(c.d.get(f), int) and not isinstance(c.d.get(f), bool)
                and c.d[f] > 1), None)   # an expert count; num_experts_per_tok alone does not make a dense model MoE
    if mt in MOE_FAMILIES or hit:
        what = ", ".join(f"{f} {c.d[f]}" for f in MOE_FIELDS if isinstance(c.d.get(f), int)) or "expert layers"
        raise c.err(hit or "model_type", f"model_type {mt!r} is not supported: mixture-of-experts layers ({what}) "
                                         f"are not modelled, and a dense estimate would be wrong by the expert count")


FAMILIES: dict[str, Callable[[_Cfg], dict]] = {
    "bert": lambda c: _bert_like(c, "bert"),
    "roberta": lambda c: _bert_like(c, "roberta"),
    "distilbert": _distilbert,
    "gpt2": _gpt2,
    "gpt_neox": _neox,
    "llama": lambda c: _llama_like(c, "llama"),
    "mistral": lambda c: _llama_like(c, "mistral"),
    "qwen2": lambda c: _llama_like(c, "qwen2"),
    "gemma": lambda c: _llama_like(c, "gemma"),
    "opt": _opt,
    "gptj": lambda c: _gptj(c, "gptj"),
    "codegen": lambda c: _gptj(c, "codegen"),
    "gpt_neo": _gpt_neo,
    "falcon": _falcon,
    "phi": _phi,
    "stablelm": _stablelm,
    "bloom": _bloom,
    "t5": _t5,
    "bart": _bart,
    "vit": _vit,
}


def _with_ref(spec: dict, cls: str) -> dict:
    spec["_class"] = cls
    return spec


def hf_to_dict(path: str) -> dict:
    """The model-YAML fields (a plain dict) for a Hugging Face config.json."""
    c = read_config(path)
    mt = c.d.get("model_type")
    if not isinstance(mt, str):
        raise c.err("model_type", f"missing field 'model_type' (expected one of: {', '.join(FAMILIES)})")
    _reject_moe(c, mt)
    if mt not in FAMILIES:
        raise c.err("model_type", f"model_type {mt!r} is not supported{suggest(mt, FAMILIES)} "
                                  f"(expected one of: {', '.join(FAMILIES)})")
    spec = FAMILIES[mt](c)
    cls = spec.pop("_class")
    name = _name(path, c)
    out = {"name": name, "description": f"{cls} from {os.path.basename(path)} (Hugging Face {mt})",
           "reference": {"library": HF_LIBRARY, "class": cls, "config": c.d.get("_name_or_path") or os.path.basename(path)}}
    out.update(spec)
    return out


def load_hf_config(path: str):
    """A validated model spec from a Hugging Face config.json."""
    from pydantic import ValidationError
    from .catalog import _MODEL_ADAPTER
    d = hf_to_dict(path)
    try:
        return _MODEL_ADAPTER.validate_python(d)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"] if x not in ("transformer", "vit"))
        msg = err["msg"].replace("Value error, ", "")
        raise CostModelError(f"config gives an invalid spec: {loc}: {msg}", file=path) from None


def to_yaml(path: str) -> str:
    """Model YAML text for a config.json, with its exact parameter count."""
    import yaml
    from .engine import count_params
    spec = load_hf_config(path)
    d = hf_to_dict(path)
    n = count_params(spec)
    head = (f"# generated by `costmodel import hf {os.path.basename(path)}`\n"
            f"# parameters: {n:,} (sum of p.numel() over {d['reference']['class']}.parameters(), tied weights once)\n")
    return head + yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
