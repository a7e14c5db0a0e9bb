"""Build a runnable ``torch.nn.Module`` from a costmodel model spec.

The module is the same model the engine costs, op by op, as
``costmodel/build.py`` expands it -- same parameters, same matrix products,
same tensors saved for backward -- so that torch itself can check the engine:

* parameter count      == ``costmodel.count_params(spec)``;
* FlopCounterMode FLOPs == ``forward_matmul_flops`` (+ ``backward_matmul_flops``);
* bytes autograd saves  == ``activation_bytes_per_micro_batch``.

There is one source of truth, the YAML spec: nothing here knows a model by
name. Choices that make the mirror exact (each is what the reference or the
GPU kernel does, stated where it is made):

* attention is *eager*: ``matmul(q, k^T)``, scale, additive bias/mask,
  ``softmax``, dropout, ``matmul(p, v)`` -- FlopCounterMode counts 0 FLOPs for
  the fused CPU kernel of ``F.scaled_dot_product_attention``;
* dropout calls ``torch.native_dropout`` (what ``F.dropout`` runs on CUDA: a
  1-byte bool mask is saved); ``F.dropout`` on the CPU takes a composite path
  that saves a float noise tensor (4 bytes/element) instead;
* masks are additive float tensors (save nothing for backward);
* LayerNorm/RMSNorm call ``F.layer_norm`` / ``F.rms_norm``;
* ReLU in CNNs is in place (torchvision); elsewhere out of place (torch.nn.ReLU()).

Every forward piece runs under ``op(kind)`` with the engine's op kind, so a
saved-tensor hook can attribute each saved storage to the op that saved it.

torch is imported here; this module is only imported by the ``validate``
extra (``pip install costmodel[validate]``), never by the core.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..specs.model import CNNSpec, MLPSpec, RNNSpec, TransformerSpec, ViTSpec

# --- op attribution ----------------------------------------------------------
_TAGS: list[str] = []


@contextlib.contextmanager
def op(kind: str):
    """Attribute everything run inside to the engine op kind ``kind``."""
    _TAGS.append(kind)
    try:
        yield
    finally:
        _TAGS.pop()


def current_op() -> str:
    return _TAGS[-1] if _TAGS else "other"


def dropout(x, p: float, training: bool):
    """Dropout as the CUDA kernel runs it (torch.native_dropout saves a bool mask)."""
    if not training or p <= 0:
        return x
    with op("dropout"):
        return torch.native_dropout(x, p, True)[0]


ACTS = {
    "relu": F.relu,
    "gelu": F.gelu,                                        # exact erf GELU (BERT, BART, ViT)
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),   # GPT-2's tanh approximation, fused
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu6": F.relu6,                                      # torchvision MobileNetV2 (nn.ReLU6)
    "hardswish": F.hardswish,                              # MobileNetV3
    "hardsigmoid": F.hardsigmoid,                          # MobileNetV3 squeeze-excitation gate
}


def act(fn: str, x, inplace: bool = False):
    with op("activation"):
        if inplace and fn == "relu":
            return F.relu(x, inplace=True)
        return ACTS[fn](x)


# --- transformer pieces --------------------------------------------------------
class Norm(nn.Module):
    def __init__(self, dim: int, kind: str = "layernorm", bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.kind, self.dim, self.eps = kind, dim, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if (bias and kind == "layernorm") else None

    def forward(self, x):
        with op("norm"):
            if self.kind == "layernorm":
                return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
            return F.rms_norm(x, (self.dim,), self.weight, self.eps)


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    """Multi-head attention, eager (build._attention)."""

    def __init__(self, d, heads, kv_heads, dh, *, bias_qkv, bias_out, p_drop, scaled):
        super().__init__()
        self.h, self.kvh, self.dh, self.p, self.scaled = heads, kv_heads, dh, p_drop, scaled
        self.q_proj = nn.Linear(d, heads * dh, bias=bias_qkv)
        self.k_proj = nn.Linear(d, kv_heads * dh, bias=bias_qkv)
        self.v_proj = nn.Linear(d, kv_heads * dh, bias=bias_qkv)
        self.out_proj = nn.Linear(heads * dh, d, bias=bias_out)

    def forward(self, x, kv=None, *, mask=None, pos_bias=None, rope=None):
        b, q_len, _ = x.shape
        src = x if kv is None else kv
        kv_len = src.shape[1]
        with op("linear"):
            q = self.q_proj(x).view(b, q_len, self.h, self.dh).transpose(1, 2)
            k = self.k_proj(src).view(b, kv_len, self.kvh, self.dh).transpose(1, 2)
            v = self.v_proj(src).view(b, kv_len, self.kvh, self.dh).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            rd = cos.shape[-1]      # rotary dims per head (GPT-NeoX rotary_pct < 1: the rest pass through)
            with op("rotary"):
                if rd == self.dh:
                    q = q * cos + rotate_half(q) * sin
                    k = k * cos + rotate_half(k) * sin
                else:
                    q = torch.cat((q[..., :rd] * cos + rotate_half(q[..., :rd]) * sin, q[..., rd:]), dim=-1)
                    k = torch.cat((k[..., :rd] * cos + rotate_half(k[..., :rd]) * sin, k[..., rd:]), dim=-1)
        if self.kvh != self.h:   # GQA: repeat K/V heads (HF repeat_kv: expand + reshape)
            r = self.h // self.kvh
            with op("bmm"):
                k = k[:, :, None].expand(b, self.kvh, r, kv_len, self.dh).reshape(b, self.h, kv_len, self.dh)
                v = v[:, :, None].expand(b, self.kvh, r, kv_len, self.dh).reshape(b, self.h, kv_len, self.dh)
        with op("bmm"):
            s = torch.matmul(q, k.transpose(-1, -2))
        with op("scale"):
            if self.scaled:
                s = s * (1.0 / math.sqrt(self.dh))
            if pos_bias is not None:
                s = s + pos_bias
            if mask is not None:
                s = s + mask
        with op("softmax"):
            pr = F.softmax(s, dim=-1)
        pr = dropout(pr, self.p, self.training)
        with op("bmm"):
            o = torch.matmul(pr, v)
        o = o.transpose(1, 2).reshape(b, q_len, self.h * self.dh)
        with op("linear"):
            o = self.out_proj(o)
        return dropout(o, self.p, self.training)


class FFN(nn.Module):
    def __init__(self, d, d_ff, act_fn, bias, p_drop):
        super().__init__()
        self.act, self.p = act_fn, p_drop
        if act_fn in ("swiglu", "geglu"):
            self.gate_proj = nn.Linear(d, d_ff, bias=bias)
            self.up_proj = nn.Linear(d, d_ff, bias=bias)
        else:
            self.fc1 = nn.Linear(d, d_ff, bias=bias)
        self.fc2 = nn.Linear(d_ff, d, bias=bias)

    def forward(self, x):
        if self.act in ("swiglu", "geglu"):
            with op("linear"):
                g, u = self.gate_proj(x), self.up_proj(x)
            with op("glu"):
                h = (F.silu(g) if self.act == "swiglu" else F.gelu(g, approximate="tanh")) * u
        else:
            with op("linear"):
                h = self.fc1(x)
            h = act(self.act, h)
        with op("linear"):
            h = self.fc2(h)
        return dropout(h, self.p, self.training)


class Layer(nn.Module):
    """[norm] attention add [norm], ([norm] cross-attention add [norm]), [norm] FFN add [norm]."""

    def __init__(self, spec: TransformerSpec, *, cross: bool, eps: float = 1e-5):
        super().__init__()
        d = spec.d_model
        self.pre = spec.norm_position == "pre"
        self.parallel = spec.parallel_residual and self.pre and not cross
        self.shared = self.parallel and spec.shared_norm   # GPT-J / Falcon-7B: one norm, both branches
        mk = lambda: Norm(d, spec.norm, spec.norm_bias, eps)  # noqa: E731
        self.attn_norm = mk()
        self.attn = Attention(d, spec.heads, spec.n_kv_heads, spec.head_dim, bias_qkv=spec.biases.qkv,
                              bias_out=spec.biases.attn_out, p_drop=spec.dropout,
                              scaled=spec.position != "relative_bias")
        self.cross = None
        if cross:
            self.cross_norm = mk()
            self.cross = Attention(d, spec.heads, spec.heads, spec.head_dim, bias_qkv=spec.biases.qkv,
                                   bias_out=spec.biases.attn_out, p_drop=spec.dropout,
                                   scaled=spec.position != "relative_bias")
        self.ffn_norm = None if self.shared else mk()
        self.ffn = FFN(d, spec.d_ff, spec.activation, spec.biases.ffn, spec.dropout)

    def _sub(self, x, norm, fn):
        if self.pre:
            h = fn(norm(x))
            with op("add"):
                return x + h
        h = fn(x)
        with op("add"):
            x = x + h
        return norm(x)

    def forward(self, x, *, mask=None, pos_bias=None, rope=None, enc=None, enc_mask=None):
        if self.parallel:   # x + attn(norm1(x)) + ffn(norm2(x)) (GPT-NeoX); shared: norm1 = norm2 (GPT-J)
            h = self.attn_norm(x)
            a = self.attn(h, mask=mask, pos_bias=pos_bias, rope=rope)
            f = self.ffn(h if self.shared else self.ffn_norm(x))
            with op("add"):
                h = x + a
            with op("add"):
                return h + f
        x = self._sub(x, self.attn_norm, lambda h: self.attn(h, mask=mask, pos_bias=pos_bias, rope=rope))
        if self.cross is not None:
            x = self._sub(x, self.cross_norm, lambda h: self.cross(h, enc, mask=enc_mask))
        return self._sub(x, self.ffn_norm, self.ffn)


def alibi_slopes(heads: int):
    """ALiBi head slopes (Press et al. 2022 sec. 3; HF BLOOM _get_alibi_slopes):
    2^(-8i/n) for i = 1..n over the closest power of two n <= heads, then
    every other slope of 2n for the remaining heads."""
    n = 2 ** math.floor(math.log2(heads))
    base = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
    slopes = [base ** i for i in range(1, n + 1)]
    if n != heads:
        extra = 2.0 ** (-(2.0 ** -(math.log2(2 * n) - 3)))
        slopes += [extra ** i for i in range(1, 2 * (heads - n), 2)]
    return torch.tensor(slopes, dtype=torch.float32)


def sinusoidal_table(n: int, d: int):
    """Vaswani et al. 2017 sec. 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d // 2])
    return pe


def t5_buckets(q_len: int, k_len: int, bidirectional: bool, num_buckets: int, max_distance: int = 128,
               device=None):
    """T5 relative-position buckets (Raffel et al. 2020; HF T5Attention._relative_position_bucket)."""
    ctx = torch.arange(q_len, device=device)[:, None]
    mem = torch.arange(k_len, device=device)[None, :]
    rel = mem - ctx
    buckets = torch.zeros_like(rel)
    n = num_buckets
    if bidirectional:
        n //= 2
        buckets = buckets + (rel > 0).long() * n
        rel = rel.abs()
    else:
        rel = -torch.clamp(rel, max=0)
    exact = n // 2
    small = rel < exact
    large = exact + (torch.log(rel.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                     * (n - exact)).long()
    large = torch.clamp(large, max=n - 1)
    return buckets + torch.where(small, rel, large)


class Stack(nn.Module):
    """Embeddings, (relative-bias table), layers, final norm (build._stack)."""

    def __init__(self, spec: TransformerSpec, *, layers: int, causal: bool, cross: bool, tok: nn.Embedding):
        super().__init__()
        d = spec.d_model
        self.spec, self.causal = spec, causal
        self.tok = tok
        self.pos = None
        # OPT-350m: a narrower token table, projected in and out without bias
        self.project_in = nn.Linear(spec.token_dim, d, bias=False) if spec.token_dim != d else None
        self.project_out = nn.Linear(d, spec.token_dim, bias=False) if spec.token_dim != d else None
        if spec.position == "learned":
            self.pos = nn.Embedding(spec.max_positions + spec.position_offset, d)
        elif spec.position == "sinusoidal":
            self.register_buffer("pe", sinusoidal_table(spec.max_positions, d), persistent=False)
        self.token_type = nn.Embedding(spec.token_types, d) if spec.token_types else None
        self.emb_norm = Norm(d, spec.norm, spec.norm_bias) if spec.embedding_norm else None
        self.rel = nn.Embedding(spec.relative_buckets, spec.heads) if spec.position == "relative_bias" else None
        if spec.position == "rotary":
            rd = int(spec.head_dim * spec.rotary_fraction)   # HF GPT-NeoX: int(head_size * rotary_pct)
            self.register_buffer("inv_freq", 1.0 / (10000.0 ** (torch.arange(0, rd, 2).float() / rd)),
                                 persistent=False)
        self.layers = nn.ModuleList(Layer(spec, cross=cross) for _ in range(layers))
        self.final_norm = Norm(d, spec.norm, spec.norm_bias) if spec.final_norm else None

    def forward(self, ids, *, token_type_ids=None, enc=None):
        spec = self.spec
        b, s = ids.shape
        dev = ids.device
        with op("embedding"):
            x = self.tok(ids)
        if spec.embed_scale:   # Gemma: * sqrt(d_model), a constant (saves nothing)
            with op("scale"):
                x = x * math.sqrt(spec.d_model)
        if self.project_in is not None:
            with op("linear"):
                x = self.project_in(x)
        with op("embedding"):
            parts = []
            if self.pos is not None:   # position ids (1, s) broadcast over the batch (HF GPT-2/BERT/BART)
                pid = torch.arange(spec.position_offset, s + spec.position_offset, device=dev)[None]
                parts.append(self.pos(pid))
            elif spec.position == "sinusoidal":
                parts.append(self.pe[:s].to(x.dtype))
            if self.token_type is not None:
                parts.append(self.token_type(token_type_ids))
        for p_ in parts:
            with op("add"):
                x = x + p_
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        x = dropout(x, spec.dropout, self.training)
        mask = pos_bias = rope = None
        neg = torch.finfo(x.dtype).min
        if self.causal:
            mask = torch.full((s, s), neg, device=dev, dtype=x.dtype).triu(1)
        elif self.rel is None:
            mask = torch.zeros(b, 1, 1, s, device=dev, dtype=x.dtype)   # all-ones padding mask, additive
        if self.rel is not None:
            with op("param"):   # one bucket lookup per stack, shared by all layers (HF T5)
                bk = t5_buckets(s, s, not self.causal, spec.relative_buckets, device=dev)
                pos_bias = self.rel(bk).permute(2, 0, 1)[None]
            if mask is not None:
                pos_bias, mask = pos_bias + mask, None
        if spec.position == "alibi":   # constants: slope(head) * key position, added to every layer's scores
            with op("scale"):
                pos_bias = (alibi_slopes(spec.heads).to(dev)[:, None, None]
                            * torch.arange(s, device=dev, dtype=torch.float32)[None, None, :])[None].to(x.dtype)
                if mask is not None:
                    pos_bias, mask = pos_bias + mask, None
        if self.inv_freq_present():
            with op("rotary"):
                t = torch.arange(s, device=dev, dtype=torch.float32)
                freqs = torch.outer(t, self.inv_freq)
                emb = torch.cat((freqs, freqs), dim=-1)
                rope = (emb.cos().to(x.dtype)[None, None], emb.sin().to(x.dtype)[None, None])
        enc_mask = None
        if enc is not None:
            enc_mask = torch.zeros(b, 1, 1, enc.shape[1], device=dev, dtype=x.dtype)
        for layer in self.layers:
            x = layer(x, mask=mask, pos_bias=pos_bias, rope=rope, enc=enc, enc_mask=enc_mask)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if self.project_out is not None:
            with op("linear"):
                x = self.project_out(x)
        return x

    def inv_freq_present(self) -> bool:
        return hasattr(self, "inv_freq")


class TransformerModel(nn.Module):
    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.spec = spec
        d = spec.d_model
        causal = spec.causal if spec.causal is not None else spec.structure != "encoder"
        self.tok = nn.Embedding(spec.vocab_size, spec.token_dim)
        if spec.structure == "encoder":
            self.encoder, self.decoder = Stack(spec, layers=spec.layers, causal=causal, cross=False, tok=self.tok), None
        elif spec.structure == "decoder":
            self.encoder, self.decoder = None, Stack(spec, layers=spec.layers, causal=causal, cross=False, tok=self.tok)
        else:   # shared token table for both stacks and the tied head
            self.encoder = Stack(spec, layers=spec.layers, causal=False, cross=False, tok=self.tok)
            self.decoder = Stack(spec, layers=spec.decoder_layers, causal=True, cross=True, tok=self.tok)
        self.pooler = nn.Linear(d, d) if spec.pooler else None
        self.classifier = nn.Linear(d, spec.num_classes) if spec.num_classes else None
        self.lm_head = None
        self.transform = None
        if spec.lm_head and spec.lm_head_transform:   # HF BertPredictionHeadTransform: dense, act, norm
            self.transform = nn.Linear(d, d)
            self.transform_norm = Norm(d, spec.norm, spec.norm_bias)
        if spec.lm_head:
            self.lm_head = nn.Linear(spec.token_dim, spec.vocab_size, bias=spec.biases.lm_head)
            if spec.tied_embeddings:
                self.lm_head.weight = self.tok.weight

    def make_inputs(self, batch: int, seq: int, target_seq: int = 0, image: int = 0, device="cpu", dtype=None):
        spec = self.spec
        g = torch.Generator().manual_seed(0)
        out = {"ids": torch.randint(0, spec.vocab_size, (batch, seq), generator=g).to(device)}
        if spec.token_types:
            out["token_type_ids"] = torch.zeros(batch, seq, dtype=torch.long, device=device)
        if spec.structure == "encoder-decoder":
            out["dec_ids"] = torch.randint(0, spec.vocab_size, (batch, target_seq or seq), generator=g).to(device)
        if spec.lm_head:
            n = out.get("dec_ids", out["ids"]).shape
            out["labels"] = torch.randint(0, spec.vocab_size, n, generator=g).to(device)
        return out

    def forward(self, ids, token_type_ids=None, dec_ids=None, labels=None, loss: bool = True):
        spec = self.spec
        if spec.structure == "encoder":
            x = self.encoder(ids, token_type_ids=token_type_ids)
        elif spec.structure == "decoder":
            x = self.decoder(ids, token_type_ids=token_type_ids)
        else:
            enc = self.encoder(ids, token_type_ids=token_type_ids)
            x = self.decoder(dec_ids, enc=enc)
        outs = [x]
        pooled = None
        if self.pooler is not None:
            with op("linear"):
                pooled = self.pooler(x[:, 0])
            pooled = act("tanh", pooled)
            outs.append(pooled)
        if self.classifier is not None:
            with op("linear"):
                outs.append(self.classifier(pooled if pooled is not None else x[:, 0]))
        if self.lm_head is not None:
            if self.transform is not None:
                with op("linear"):
                    x = self.transform(x)
                x = act({"swiglu": "silu", "geglu": "gelu"}.get(spec.activation, spec.activation), x)
                x = self.transform_norm(x)
            with op("linear"):
                logits = self.lm_head(x)
            if loss and labels is not None and self.training:
                with op("cross_entropy"):
                    # HF ForCausalLMLoss: logits.float(), then cross_entropy over the flattened rows
                    return F.cross_entropy(logits.float().view(-1, spec.vocab_size), labels.view(-1))
            outs = [logits]
        return _sum_outputs(outs)


def _sum_outputs(outs):
    """A scalar to call backward on: sum() keeps nothing for backward and counts no FLOPs."""
    with op("other"):
        total = outs[0].float().sum()
        for o in outs[1:]:
            total = total + o.float().sum()
        return total


# --- ViT ------------------------------------------------------------------------
class ViTModel(nn.Module):
    """torchvision VisionTransformer, with the attention written out (build_vit)."""

    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.spec = spec
        d = spec.d_model
        n_patch = (spec.image_size // spec.patch_size) ** 2
        seq = n_patch + (1 if spec.class_token else 0)
        self.conv_proj = nn.Conv2d(spec.channels, d, kernel_size=spec.patch_size, stride=spec.patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, d)) if spec.class_token else None
        self.pos_embedding = nn.Parameter(torch.empty(1, seq, d).normal_(std=0.02))
        tf = TransformerSpec(arch="transformer", name=spec.name, structure="encoder", layers=spec.layers,
                             d_model=d, heads=spec.heads, d_ff=spec.d_ff, vocab_size=1, max_positions=seq,
                             position="none", norm_position="pre", activation="gelu", dropout=spec.dropout,
                             lm_head=False, biases={"qkv": spec.qkv_bias})
        self.layers = nn.ModuleList(Layer(tf, cross=False, eps=spec.norm_eps) for _ in range(spec.layers))
        self.final_norm = Norm(d, eps=spec.norm_eps)
        self.pooler = nn.Linear(d, d) if spec.pooler else None   # HF ViTPooler: dense + tanh on the class token
        self.head = nn.Linear(d, spec.num_classes) if spec.num_classes else None

    def make_inputs(self, batch: int, seq: int = 0, target_seq: int = 0, image: int = 0, device="cpu", dtype=None):
        img = image or self.spec.image_size
        g = torch.Generator().manual_seed(0)
        return {"x": torch.randn(batch, self.spec.channels, img, img, generator=g).to(device=device, dtype=dtype)}

    def forward(self, x, loss: bool = True):
        b = x.shape[0]
        with op("conv2d"):
            x = self.conv_proj(x)
        x = x.flatten(2).transpose(1, 2)
        if self.class_token is not None:
            x = torch.cat([self.class_token.expand(b, -1, -1), x], dim=1)
        with op("add"):
            x = x + self.pos_embedding
        mask = torch.zeros(b, 1, 1, x.shape[1], device=x.device, dtype=x.dtype)
        for layer in self.layers:
            x = layer(x, mask=mask)
        x = self.final_norm(x)
        outs = [x]
        if self.pooler is not None:
            with op("linear"):
                pooled = self.pooler(x[:, 0])
            outs.append(act("tanh", pooled))
        if self.head is not None:
            with op("linear"):
                outs = [self.head(x[:, 0])] + outs[1:]
        return _sum_outputs(outs)


# --- CNN -------------------------------------------------------------------------
class ResBlock(nn.Module):
    """torchvision BasicBlock / Bottleneck (build._resnet_block)."""

    def __init__(self, c_in, kind, planes, stride, groups, wpg, expansion):
        super().__init__()
        exp = expansion or (1 if kind == "basic" else 4)
        self.kind = kind
        if kind == "basic":
            self.convs = nn.ModuleList([nn.Conv2d(c_in, planes, 3, stride, 1, bias=False),
                                        nn.Conv2d(planes, planes, 3, 1, 1, bias=False)])
            self.bns = nn.ModuleList([nn.BatchNorm2d(planes), nn.BatchNorm2d(planes)])
        else:
            width = int(planes * (wpg / 64.0)) * groups
            self.convs = nn.ModuleList([nn.Conv2d(c_in, width, 1, bias=False),
                                        nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False),
                                        nn.Conv2d(width, planes * exp, 1, bias=False)])
            self.bns = nn.ModuleList([nn.BatchNorm2d(width), nn.BatchNorm2d(width), nn.BatchNorm2d(planes * exp)])
        self.down = None
        if stride != 1 or c_in != planes * exp:
            self.down = nn.Sequential(nn.Conv2d(c_in, planes * exp, 1, stride, bias=False), nn.BatchNorm2d(planes * exp))
        self.c_out = planes * exp

    def forward(self, x):
        h = x
        n = len(self.convs)
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            with op("conv2d"):
                h = conv(h)
            with op("batchnorm"):
                h = bn(h)
            if i < n - 1:
                h = act("relu", h, inplace=True)
        idt = x
        if self.down is not None:
            with op("conv2d"):
                idt = self.down[0](x)
            with op("batchnorm"):
                idt = self.down[1](idt)
        with op("add"):
            h = h + idt
        return act("relu", h, inplace=True)


class SqueezeExcite(nn.Module):
    """torchvision ops.misc.SqueezeExcitation (build._se)."""

    def __init__(self, c, squeeze, activation, gate):
        super().__init__()
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.activation, self.gate = activation, gate

    def forward(self, x):
        with op("pool"):
            s = F.adaptive_avg_pool2d(x, 1)      # torch: mean, keeps nothing
        with op("conv2d"):
            s = self.fc1(s)
        s = act(self.activation, s)
        with op("conv2d"):
            s = self.fc2(s)
        s = act(self.gate, s)
        with op("channel_scale"):
            return s * x


class LayerScale(nn.Module):
    """ConvNeXt layer_scale: a (C, 1, 1) parameter times x."""

    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((c, 1, 1), 1e-6))

    def forward(self, x):
        with op("channel_scale"):
            return self.gamma * x


class LayerNorm2d(nn.LayerNorm):
    """torchvision LayerNorm2d: layer_norm over C of the channels-last view."""

    def forward(self, x):
        with op("norm"):
            return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                                self.eps).permute(0, 3, 1, 2)


class ResidualBlock(nn.Module):
    """activation(body(x) + shortcut(x)) (build._residual_block)."""

    def __init__(self, body, shortcut, activation, c, h, w):
        super().__init__()
        self.body = CNNSeq(body, c, h, w)
        self.shortcut = CNNSeq(shortcut, c, h, w) if shortcut else None
        self.activation = activation
        self.out = self.body.out

    def forward(self, x):
        y = self.body(x)
        s = x if self.shortcut is None else self.shortcut(x)
        with op("add"):
            y = y + s
        return act(self.activation, y, inplace=True) if self.activation else y


class ConcatBlock(nn.Module):
    """torch.cat of the branches along channels (build._concat_block)."""

    def __init__(self, L, c, h, w):
        super().__init__()
        nb = len(L.branches)
        self.split, self.nb = L.split, nb
        self.branches = nn.ModuleList(CNNSeq(b, c // nb if L.split else c, h, w) for b in L.branches)
        outs = [b.out for b in self.branches]
        self.out = (sum(o[0] for o in outs), outs[0][1], outs[0][2], None)

    def forward(self, x):
        xs = x.chunk(self.nb, dim=1) if self.split else [x] * self.nb
        ys = [b(xi) for b, xi in zip(self.branches, xs)]
        with op("concat"):
            return torch.cat(ys, dim=1)


class CNNSeq(nn.Module):
    """A CNN layer list (build._cnn_layers), torchvision semantics: ReLU in
    place (never on the list's own input, which a shortcut or another branch
    may still read), other activations out of place (an in-place ReLU6 /
    hardswish / SiLU keeps a copy of its input: the same bytes)."""

    def __init__(self, layers, c, h, w, flat=None):
        super().__init__()
        from ..build import _stride1, pool_out
        from ..ops import conv_out
        self.layers = list(layers)
        self.mods = nn.ModuleList()
        for L in self.layers:
            t = L.type
            m: nn.Module = nn.Identity()
            if t == "resnet_stage":
                blocks = []
                for i in range(L.blocks):
                    s = L.stride if i == 0 else 1
                    blocks.append(ResBlock(c, L.block, L.planes, s, L.groups, L.width_per_group, L.expansion))
                    c = blocks[-1].c_out
                    h, w = conv_out(h, 3, s, 1), conv_out(w, 3, s, 1)
                m = nn.Sequential(*blocks)
            elif t == "residual":
                blocks = [ResidualBlock(L.body, L.shortcut, L.activation, c, h, w)]
                rest = _stride1(L.body)
                for _ in range(L.blocks - 1):
                    blocks.append(ResidualBlock(rest, [], L.activation, *blocks[-1].out[:3]))
                c, h, w, _ = blocks[-1].out
                m = nn.Sequential(*blocks)
            elif t == "concat":
                blocks = []
                for _ in range(L.blocks):
                    blocks.append(ConcatBlock(L, c, h, w))
                    c, h, w, _ = blocks[-1].out
                m = nn.Sequential(*blocks)
            elif t == "conv":
                m = nn.Conv2d(c, L.out, L.kernel, L.stride, L.padding, groups=L.groups, bias=L.bias)
                c, h, w = L.out, conv_out(h, L.kernel, L.stride, L.padding), conv_out(w, L.kernel, L.stride, L.padding)
            elif t == "bn":
                m = nn.BatchNorm2d(c)
            elif t == "layernorm2d":
                m = LayerNorm2d(c)
            elif t == "layer_scale":
                m = LayerScale(c)
            elif t == "se":
                m = SqueezeExcite(c, L.squeeze(c), L.activation, L.gate)
            elif t in ("maxpool", "avgpool"):
                s = L.stride or L.kernel
                h, w = pool_out(h, L.kernel, s, L.padding, L.ceil_mode), pool_out(w, L.kernel, s, L.padding, L.ceil_mode)
            elif t in ("adaptive_avgpool", "adaptive_maxpool"):
                h = w = L.output
            elif t == "flatten":
                flat = c * h * w
            elif t == "linear":
                m = nn.Linear(flat, L.out, bias=L.bias)
                flat = L.out
            self.mods.append(m)
        self.out = (c, h, w, flat)

    def forward(self, x):
        inp = x
        for L, m in zip(self.layers, self.mods):
            t = L.type
            if t in ("conv",):
                with op("conv2d"):
                    x = m(x)
            elif t == "bn":
                with op("batchnorm"):
                    x = m(x)
            elif t in ACTS:
                x = act(t, x, inplace=(t == "relu" and x is not inp))
            elif t in ("maxpool", "avgpool"):
                with op("pool"):
                    f = F.max_pool2d if t == "maxpool" else F.avg_pool2d
                    x = f(x, L.kernel, L.stride or L.kernel, L.padding, ceil_mode=L.ceil_mode)
            elif t in ("adaptive_avgpool", "adaptive_maxpool"):
                with op("pool"):
                    x = (F.adaptive_avg_pool2d if t == "adaptive_avgpool" else F.adaptive_max_pool2d)(x, L.output)
            elif t == "flatten":
                x = torch.flatten(x, 1)
            elif t == "linear":
                with op("linear"):
                    x = m(x)
            elif t == "dropout":
                x = dropout(x, L.p, self.training)
            elif t == "channel_shuffle":
                n, c, h, w = x.shape
                with op("concat"):
                    x = x.view(n, L.groups, c // L.groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
            else:   # resnet_stage, residual, concat, se, layer_scale, layernorm2d: modules that attribute their ops
                x = m(x)
        return x


class CNNModel(nn.Module):
    """A layer list (build_cnn), torchvision semantics (in-place ReLU)."""

    def __init__(self, spec: CNNSpec):
        super().__init__()
        self.spec = spec
        self.net = CNNSeq(spec.layers, spec.channels, spec.image_size, spec.image_size)

    def make_inputs(self, batch: int, seq: int = 0, target_seq: int = 0, image: int = 0, device="cpu", dtype=None):
        img = image or self.spec.image_size
        g = torch.Generator().manual_seed(0)
        return {"x": torch.randn(batch, self.spec.channels, img, img, generator=g).to(device=device, dtype=dtype)}

    def forward(self, x, loss: bool = True):
        return _sum_outputs([self.net(x)])


# --- RNN / MLP ----------------------------------------------------------------------
class RNNModel(nn.Module):
    def __init__(self, spec: RNNSpec):
        super().__init__()
        self.spec = spec
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[spec.cell]
        self.emb = nn.Embedding(spec.vocab_size, spec.input_size) if spec.vocab_size else None
        self.rnn = cls(spec.input_size, spec.hidden_size, num_layers=spec.layers, bias=spec.bias,
                       batch_first=True, bidirectional=spec.bidirectional)
        dirs = 2 if spec.bidirectional else 1
        self.head = nn.Linear(spec.hidden_size * dirs, spec.num_classes) if spec.num_classes else None

    def make_inputs(self, batch: int, seq: int = 0, target_seq: int = 0, image: int = 0, device="cpu", dtype=None):
        s = seq or self.spec.default_seq
        g = torch.Generator().manual_seed(0)
        if self.emb is not None:
            return {"x": torch.randint(0, self.spec.vocab_size, (batch, s), generator=g).to(device)}
        return {"x": torch.randn(batch, s, self.spec.input_size, generator=g).to(device=device, dtype=dtype)}

    def forward(self, x, loss: bool = True):
        if self.emb is not None:
            with op("embedding"):
                x = self.emb(x)
        with op("rnn"):
            y, _ = self.rnn(x)
        if self.head is not None:
            with op("linear"):
                y = self.head(y[:, -1])
        return _sum_outputs([y])


class MLPModel(nn.Module):
    def __init__(self, spec: MLPSpec):
        super().__init__()
        self.spec = spec
        dims = [spec.input_size] + list(spec.hidden)
        self.fcs = nn.ModuleList(nn.Linear(a, b, bias=spec.bias) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], spec.output_size, bias=spec.bias)

    def make_inputs(self, batch: int, seq: int = 0, target_seq: int = 0, image: int = 0, device="cpu", dtype=None):
        g = torch.Generator().manual_seed(0)
        return {"x": torch.randn(batch, self.spec.input_size, generator=g).to(device=device, dtype=dtype)}

    def forward(self, x, loss: bool = True):
        for fc in self.fcs:
            with op("linear"):
                x = fc(x)
            x = act(self.spec.activation, x)
            x = dropout(x, self.spec.dropout, self.training)
        with op("linear"):
            x = self.out(x)
        return _sum_outputs([x])


def build_module(spec) -> nn.Module:
    """The torch module of a (loaded) model spec. Construct it under
    ``torch.device('meta')`` to count parameters of huge models for free."""
    if isinstance(spec, TransformerSpec):
        return TransformerModel(spec)
    if isinstance(spec, ViTSpec):
        return ViTModel(spec)
    if isinstance(spec, CNNSpec):
        return CNNModel(spec)
    if isinstance(spec, RNNSpec):
        return RNNModel(spec)
    if isinstance(spec, MLPSpec):
        return MLPModel(spec)
    raise TypeError(type(spec))  # pragma: no cover


def count_params(module: nn.Module) -> int:
    """Unique parameters (tied weights once), as HF and torchvision report them."""
    return sum(p.numel() for p in module.parameters())
