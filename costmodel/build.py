"""Expand a model spec + workload shape into a cost tree of ops.

Each builder mirrors the reference implementation named in the spec
(Hugging Face transformers, torchvision, torch.nn): the same parameters, the
same matrix products, and the same tensors saved for backward.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ops import INDEX_BYTES, Precision, conv_out, make
from .specs.model import ACTIVATIONS, Biases, CNNSpec, MLPSpec, RNNSpec, TransformerSpec, ViTSpec
from .tree import Node


@dataclass(frozen=True)
class Shape:
    """What one forward pass processes (per device, per micro-batch)."""
    batch: int
    seq: int = 0              # (encoder) tokens per sequence; RNN steps
    target_seq: int = 0       # decoder tokens of encoder-decoder models
    image: int = 0
    training: bool = True     # dropout active, tensors saved for backward
    flash: bool = False       # fused attention kernel (no seq x seq tensors)
    kv_len: int = 0           # decode step: attend over this many cached positions
    tp: int = 1               # tensor-parallel degree (Megatron split of heads / d_ff)
    loss: bool = True         # include the LM loss (training)


def build(spec, shape: Shape, p: Precision) -> Node:
    if isinstance(spec, TransformerSpec):
        return build_transformer(spec, shape, p)
    if isinstance(spec, ViTSpec):
        return build_vit(spec, shape, p)
    if isinstance(spec, CNNSpec):
        return build_cnn(spec, shape, p)
    if isinstance(spec, RNNSpec):
        return build_rnn(spec, shape, p)
    if isinstance(spec, MLPSpec):
        return build_mlp(spec, shape, p)
    raise TypeError(type(spec))  # pragma: no cover


# --- transformer pieces ----------------------------------------------------
def _attention(blk: Node, prefix: str, p: Precision, *, b: int, q_len: int, kv_len: int, d: int, heads: int,
               kv_heads: int, dh: int, bias_qkv: bool, bias_out: bool, causal: bool, drop: bool,
               flash: bool, rotary: bool, pos_bias: bool, scaled: bool, cross: bool, tp: int = 1,
               new_kv_tokens: int | None = None, rotary_dims: int | None = None):
    """Multi-head attention (Vaswani et al. 2017 eq. 1; GQA: Ainslie et al. 2023).

    Q: d -> heads*dh over b*q_len rows; K, V: d -> kv_heads*dh over the rows
    that produce keys (b*kv_len for self/cross attention, b*new_kv_tokens when
    decoding with a KV cache). Under tensor parallelism each device holds
    heads/tp heads (Megatron-LM, Shoeybi et al. 2019)."""
    h, kvh = heads // tp, max(kv_heads // tp, 1)
    tq = b * q_len
    tkv = b * (new_kv_tokens if new_kv_tokens is not None else kv_len)
    blk.add(make("linear", f"{prefix}q_proj", p, tokens=tq, d_in=d, d_out=h * dh, bias=bias_qkv))
    # K and V read the same input as Q (self-attention) or the encoder output
    # (cross-attention): that tensor is saved once.
    blk.add(make("linear", f"{prefix}k_proj", p, tokens=tkv, d_in=d, d_out=kvh * dh, bias=bias_qkv,
                 saves_input=cross))
    blk.add(make("linear", f"{prefix}v_proj", p, tokens=tkv, d_in=d, d_out=kvh * dh, bias=bias_qkv,
                 saves_input=False))
    if rotary:   # partial rotary (GPT-NeoX rotary_pct) rotates only rotary_dims of each head
        rd = dh if rotary_dims is None else rotary_dims
        blk.add(make("rotary", f"{prefix}rotary", p, elements=tq * h * rd + tkv * kvh * rd))
    if flash:
        blk.add(make("flash_attention", f"{prefix}flash_attention", p, batch=b, heads=h, kv_heads=kvh,
                     q_len=q_len, kv_len=kv_len, d_head=dh, causal=causal and q_len == kv_len))
    else:
        e = b * h * q_len * kv_len
        blk.add(make("bmm", f"{prefix}scores", p, batch=b * h, m=q_len, k=dh, n=kv_len, quadratic=True))
        if scaled:
            blk.add(make("scale", f"{prefix}scale", p, elements=e, quadratic=True))
        if pos_bias:
            blk.add(make("scale", f"{prefix}position_bias", p, elements=e, quadratic=True))
        if causal or not pos_bias:
            blk.add(make("scale", f"{prefix}mask", p, elements=e, quadratic=True))
        blk.add(make("softmax", f"{prefix}softmax", p, rows=b * h * q_len, cols=kv_len, quadratic=True))
        if drop:
            blk.add(make("dropout", f"{prefix}attn_dropout", p, elements=e, quadratic=True))
        # PV saves the probabilities only when dropout made a new tensor
        # (otherwise softmax already saved that storage) and V.
        blk.add(make("bmm", f"{prefix}values", p, batch=b * h, m=q_len, k=kv_len, n=dh, saves=(drop, True),
                     quadratic=True))
    blk.add(make("linear", f"{prefix}out_proj", p, tokens=tq, d_in=h * dh, d_out=d, bias=bias_out))
    if drop:
        blk.add(make("dropout", f"{prefix}dropout", p, elements=tq * d))


def _ffn(blk: Node, p: Precision, *, tokens: int, d: int, d_ff: int, act: str, bias: bool, drop: bool, tp: int = 1,
         input_saved: bool = False):
    """``input_saved``: the FFN input is a tensor another op already saves
    (parallel residual with one shared norm: q_proj saved it)."""
    ff = d_ff // tp
    if act in ("swiglu", "geglu"):
        blk.add(make("linear", "gate_proj", p, tokens=tokens, d_in=d, d_out=ff, bias=bias, saves_input=not input_saved))
        blk.add(make("linear", "up_proj", p, tokens=tokens, d_in=d, d_out=ff, bias=bias, saves_input=False))
        blk.add(make("glu", "act", p, elements=tokens * ff, fn="silu" if act == "swiglu" else "gelu"))
    else:
        blk.add(make("linear", "fc1", p, tokens=tokens, d_in=d, d_out=ff, bias=bias, saves_input=not input_saved))
        a = blk.add(make("activation", "act", p, elements=tokens * ff, fn=act))
        if act == "relu":   # ReLU keeps its output, the very tensor fc2 saves: one storage, booked to fc2
            a.saved_bytes = 0
    blk.add(make("linear", "fc2", p, tokens=tokens, d_in=ff, d_out=d, bias=bias))
    if drop:
        blk.add(make("dropout", "dropout", p, elements=tokens * d))


def _layer(spec: TransformerSpec, p: Precision, sh: Shape, *, name: str, count: int, q_len: int, causal: bool,
           cross_len: int = 0, kv_len: int | None = None) -> Node:
    """One transformer layer: [norm] attention add [norm], ([norm] cross-attn add [norm]), [norm] FFN add [norm]."""
    blk = Node(name, "block", count=count)
    b, d = sh.batch, spec.d_model
    tokens = b * q_len
    drop = sh.training and spec.dropout > 0
    pre = spec.norm_position == "pre"
    nb = spec.norm_bias
    decode = kv_len is not None

    def norm(label):
        return blk.add(make("norm", label, p, rows=tokens, dim=d, kind=spec.norm, bias=nb))

    def sublayer(label, cross):
        if pre:
            norm(f"{label}norm")
        _attention(blk, f"{label}", p, b=b, q_len=q_len,
                   kv_len=(cross_len if cross else (kv_len if decode else q_len)),
                   d=d, heads=spec.heads, kv_heads=(spec.heads if cross else spec.n_kv_heads), dh=spec.head_dim,
                   bias_qkv=spec.biases.qkv, bias_out=spec.biases.attn_out, causal=causal and not cross,
                   drop=drop, flash=sh.flash, rotary=(spec.position == "rotary" and not cross),
                   pos_bias=(spec.position in ("relative_bias", "alibi") and not cross),
                   scaled=spec.position != "relative_bias", cross=cross, tp=sh.tp,
                   new_kv_tokens=(q_len if decode and not cross else (0 if decode and cross else None)),
                   rotary_dims=int(spec.head_dim * spec.rotary_fraction))  # HF: int(head_size * rotary_pct)
        blk.add(make("add", f"{label}residual", p, elements=tokens * d))
        if not pre:
            norm(f"{label}norm")

    sublayer("attn.", False)
    if cross_len:
        sublayer("cross_attn.", True)
        for o in blk.children:   # every layer's cross k_proj saves the same encoder output: once per stack
            if o.name == "cross_attn.k_proj":
                o.saved_bytes /= count
    shared = spec.shared_norm and pre and not cross_len
    if pre and not shared:   # shared: the FFN reads attn.norm's output (GPT-J ln_1, Falcon input_layernorm)
        fn = norm("ffn.norm")
        if spec.parallel_residual:   # reads the layer input x, already saved by attn.norm: keep only its stats
            fn.saved_bytes -= tokens * d * p.act_bytes
    _ffn(blk, p, tokens=tokens, d=d, d_ff=spec.d_ff, act=spec.activation, bias=spec.biases.ffn, drop=drop, tp=sh.tp,
         input_saved=shared)
    blk.add(make("add", "ffn.residual", p, elements=tokens * d))
    if not pre:
        norm("ffn.norm")
    return blk


def _embeddings(spec: TransformerSpec, p: Precision, sh: Shape, seq: int, *, shared_tokens: bool,
                pos_start: int = 0) -> Node:
    node = Node("embeddings", "block")
    b, d, e = sh.batch, spec.d_model, spec.token_dim
    t = b * seq
    tok = node.add(make("embedding", "token", p, tokens=t, rows=spec.vocab_size, dim=e))
    if shared_tokens:     # decoder of a shared-embedding encoder-decoder: same table
        tok.params, tok.param_shapes = 0, ()
    if spec.embed_scale:   # Gemma: embeddings * sqrt(d_model) (a constant: saves nothing)
        node.add(make("scale", "token_scale", p, elements=t * e))
    if e != d:                 # OPT-350m project_in: word_embed_proj_dim -> hidden_size, no bias
        node.add(make("linear", "project_in", p, tokens=t, d_in=e, d_out=d, bias=False))
    n_sum = 1
    if spec.position == "learned":
        # position ids are (1, seq) and broadcast over the batch (HF GPT-2/BERT)
        pos = node.add(make("embedding", "position", p, tokens=seq, rows=spec.max_positions + spec.position_offset,
                            dim=d))
        # backward: the broadcast's gradient is first summed over the batch ((b-1)*seq*d adds,
        # reading all b*seq*d gradient elements), then scatter-added into the table (seq*d)
        pos.bwd_flops = t * d
        pos.bwd_bytes += (t - seq) * d * p.act_bytes
        n_sum += 1
    elif spec.position == "sinusoidal":
        n_sum += 1
    if spec.token_types:
        node.add(make("embedding", "token_type", p, tokens=t, rows=spec.token_types, dim=d))
        n_sum += 1
    for i in range(n_sum - 1):
        node.add(make("add", f"sum{i}", p, elements=t * d))
    if spec.embedding_norm:
        node.add(make("norm", "norm", p, rows=t, dim=d, kind=spec.norm, bias=spec.norm_bias))
    if sh.training and spec.dropout > 0:
        node.add(make("dropout", "dropout", p, elements=t * d))
    return node


def _stack(spec, p, sh, *, name, layers, seq, causal, cross_len=0, shared_tokens=False, kv_len=None) -> Node:
    st = Node(name, "stack")
    st.add(_embeddings(spec, p, sh, seq, shared_tokens=shared_tokens))
    if spec.position == "relative_bias":
        # T5: one (buckets x heads) table, held by the first layer and shared by all
        rel = st.add(make("param", "relative_attention_bias", p, shape=(spec.relative_buckets, spec.heads // sh.tp)))
        # computed once per stack as an embedding lookup that keeps its int64 (seq x key) bucket ids
        rel.saved_bytes = seq * (kv_len or seq) * INDEX_BYTES if sh.training else 0
    st.add(_layer(spec, p, sh, name="layer", count=layers, q_len=seq, causal=causal, cross_len=cross_len,
                  kv_len=kv_len))
    if spec.final_norm:
        st.add(make("norm", "final_norm", p, rows=sh.batch * seq, dim=spec.d_model, kind=spec.norm,
                    bias=spec.norm_bias))
    if spec.token_dim != spec.d_model:   # OPT-350m project_out: hidden_size -> word_embed_proj_dim, no bias
        st.add(make("linear", "project_out", p, tokens=sh.batch * seq, d_in=spec.d_model, d_out=spec.token_dim,
                    bias=False))
    return st


def _lm_head(spec: TransformerSpec, p: Precision, sh: Shape, seq: int) -> Node:
    head = Node("lm_head", "block")
    t = sh.batch * seq
    if spec.lm_head_transform:   # HF BertPredictionHeadTransform: dense + activation + LayerNorm
        head.add(make("linear", "transform.dense", p, tokens=t, d_in=spec.d_model, d_out=spec.d_model))
        head.add(make("activation", "transform.act", p, elements=t * spec.d_model,
                      fn={"swiglu": "silu", "geglu": "gelu"}.get(spec.activation, spec.activation)))
        head.add(make("norm", "transform.norm", p, rows=t, dim=spec.d_model, kind=spec.norm, bias=spec.norm_bias))
    lm = head.add(make("linear", "lm_head", p, tokens=t, d_in=spec.token_dim, d_out=spec.vocab_size,
                       bias=spec.biases.lm_head))
    if spec.tied_embeddings:     # weight shared with the token embedding
        lm.params = lm.params - spec.token_dim * spec.vocab_size
        lm.param_shapes = ((spec.vocab_size,),) if spec.biases.lm_head else ()
    if sh.training and sh.loss:
        head.add(make("cross_entropy", "loss", p, rows=t, vocab=spec.vocab_size))
    return head


def build_transformer(spec: TransformerSpec, sh: Shape, p: Precision) -> Node:
    model = Node(spec.name, "model")
    decode = sh.kv_len > 0
    causal = spec.causal if spec.causal is not None else spec.structure != "encoder"
    if spec.structure == "encoder":
        model.add(_stack(spec, p, sh, name="encoder", layers=spec.layers, seq=sh.seq, causal=causal))
        seq_out = sh.seq
    elif spec.structure == "decoder":
        seq_out = 1 if decode else sh.seq
        model.add(_stack(spec, p, sh, name="decoder", layers=spec.layers, seq=seq_out, causal=causal,
                         kv_len=(sh.kv_len if decode else None)))
    else:
        tgt = 1 if decode else (sh.target_seq or sh.seq)
        if not decode:
            model.add(_stack(spec, p, sh, name="encoder", layers=spec.layers, seq=sh.seq, causal=False))
        dec = _stack(spec, p, sh, name="decoder", layers=spec.decoder_layers, seq=tgt, causal=True,
                     cross_len=sh.seq, shared_tokens=not decode, kv_len=(sh.kv_len if decode else None))
        model.add(dec)
        seq_out = tgt
    # The pooler / classifier read x[:, 0], a view: autograd keeps the whole
    # (batch, seq, d) storage alive -- unless the LM head saves x anyway.
    first_tok = 0 if spec.lm_head else sh.batch * seq_out * spec.d_model * p.act_bytes
    if spec.pooler:
        pool = model.add(Node("pooler", "block"))
        pool.add(make("linear", "dense", p, tokens=sh.batch, d_in=spec.d_model, d_out=spec.d_model)).saved_bytes = first_tok
        tanh = pool.add(make("activation", "tanh", p, elements=sh.batch * spec.d_model, fn="tanh"))
        if spec.num_classes:   # tanh keeps its output, the classifier's saved input: booked to the classifier
            tanh.saved_bytes = 0
    if spec.num_classes:
        cls = model.add(Node("classifier", "block"))
        c = cls.add(make("linear", "classifier", p, tokens=sh.batch, d_in=spec.d_model, d_out=spec.num_classes))
        if not spec.pooler:
            c.saved_bytes = first_tok
    if spec.lm_head:
        model.add(_lm_head(spec, p, sh, seq_out))
    return model


def build_vit(spec: ViTSpec, sh: Shape, p: Precision) -> Node:
    """torchvision VisionTransformer: conv patch projection, class token,
    learned position embedding, pre-norm encoder (nn.MultiheadAttention,
    MLP with GELU), final LayerNorm, linear head on the class token."""
    img = sh.image or spec.image_size
    if img % spec.patch_size:
        raise ValueError(f"image size {img} is not a multiple of patch_size {spec.patch_size}")
    n_patch = (img // spec.patch_size) ** 2
    seq = n_patch + (1 if spec.class_token else 0)
    b, d = sh.batch, spec.d_model
    model = Node(spec.name, "model")
    emb = model.add(Node("embeddings", "block"))
    emb.add(make("conv2d", "patch_proj", p, n=b, c_in=spec.channels, h=img, w=img, c_out=d,
                 kernel=spec.patch_size, stride=spec.patch_size, input_grad=False))
    if spec.class_token:
        emb.add(make("param", "class_token", p, shape=(1, 1, d)))
    emb.add(make("param", "position_embedding", p, shape=(1, spec.image_size ** 2 // spec.patch_size ** 2
                                                           + (1 if spec.class_token else 0), d)))
    pos = emb.add(make("add", "add_position", p, elements=b * seq * d))
    # the broadcast position embedding's gradient is summed over the batch
    pos.bwd_flops = b * seq * d
    tf = TransformerSpec(arch="transformer", name=spec.name, structure="encoder", layers=spec.layers,
                         d_model=d, heads=spec.heads, d_ff=spec.d_ff, vocab_size=1, max_positions=seq,
                         position="none", norm_position="pre", activation="gelu", dropout=spec.dropout,
                         lm_head=False, biases=Biases(qkv=spec.qkv_bias))
    enc = model.add(Node("encoder", "stack"))
    enc.add(_layer(tf, p, sh, name="layer", count=spec.layers, q_len=seq, causal=False))
    enc.add(make("norm", "final_norm", p, rows=b * seq, dim=d))
    if spec.pooler:   # HF ViTPooler: dense + tanh on the class token
        pool = model.add(Node("pooler", "block"))
        # x[:, 0] is a view: autograd keeps the whole final-norm output (b, seq, d)
        pool.add(make("linear", "dense", p, tokens=b, d_in=d, d_out=d)).saved_bytes = b * seq * d * p.act_bytes
        pool.add(make("activation", "tanh", p, elements=b * d, fn="tanh"))
    if spec.num_classes:
        head = model.add(Node("head", "block"))
        hd = head.add(make("linear", "head", p, tokens=b, d_in=d, d_out=spec.num_classes))
        # torchvision: head(x[:, 0]), a view that keeps the whole (b, seq, d) final-norm output
        hd.saved_bytes = 0 if spec.pooler else b * seq * d * p.act_bytes
    return model


# --- CNN -------------------------------------------------------------------
# A CNN spec is a layer list; composite layers (resnet_stage, residual,
# concat) nest further lists. Shapes flow through ``_CNNState``; the bytes
# autograd keeps are booked with a small storage tracker (``_Ctx``) so that a
# tensor two ops save (a ReLU's output and the next conv's input, a block
# input read by the body and by a projection shortcut) is counted once, as
# torch counts unique storages (costmodel/validate/exact.py checks it).
_KEEPS_OUTPUT = ("relu", "sigmoid", "tanh")   # their backward uses the result (torch derivatives.yaml)
_COMPOSITE = ("resnet_stage", "residual", "concat")


class CNNShapeError(ValueError):
    """A CNN layer that cannot run on the shape it receives. ``path`` is the
    layer's place in the spec (``layers[5].body[2]``), ``li`` its top-level
    index; ``empty``: the failure is an empty output (a larger image helps)."""

    def __init__(self, path: str, li: int, message: str, empty: bool = False):
        super().__init__(f"{path}: {message}")
        self.path, self.li, self.message, self.empty = path, li, message, empty


class _T:
    """One activation storage: its bytes, whether an op has booked it as
    saved, and the activation that keeps it as its output (booked later, to
    the next op that saves the same tensor, or to the keeper if none does)."""
    __slots__ = ("nbytes", "saved", "keeper", "krep")

    def __init__(self, nbytes):
        self.nbytes, self.saved, self.keeper, self.krep = nbytes, False, None, 0


class _Ctx:
    def __init__(self, p: Precision, n: int, training: bool):
        self.p, self.n, self.training = p, n, training
        self.rep = 0          # depth of repeated (count > 1) blocks being built
        self.kept: list[_T] = []

    def new(self, elements) -> _T:
        return _T(elements * self.p.act_bytes)

    def save(self, op, t: _T):
        if not t.saved:
            op.saved_bytes += t.nbytes
            t.saved, t.keeper = True, None

    def saves_input(self, op, t: _T, view_bytes: float):
        """``op``'s formula counted its input (``view_bytes``) as saved: book the storage instead."""
        op.saved_bytes -= view_bytes
        self.save(op, t)

    def keep(self, op, t: _T):
        if not t.saved and t.keeper is None:
            t.keeper, t.krep = op, self.rep
            self.kept.append(t)

    def read(self, op, t: _T):
        """``op`` reads ``t`` and saves nothing. The output a repeated block's
        last activation keeps is booked to the first op after the repeat that
        reads it (the block op itself is counted once per repeat)."""
        if not t.saved and t.keeper is not None and t.krep > self.rep:
            self.save(op, t)

    def finish(self):
        for t in self.kept:
            if not t.saved and t.keeper is not None:
                t.keeper.saved_bytes += t.nbytes
                t.saved = True


class _CNNState:
    def __init__(self, c, h, w, t: _T | None = None):
        self.c, self.h, self.w = c, h, w
        self.first = True
        self.flat = None
        self.t = t
        self.inp = None       # the input of the layer list being built (a shortcut / other branch reads it too)

    def copy(self) -> "_CNNState":
        s = _CNNState(self.c, self.h, self.w, self.t)
        s.first, s.flat, s.inp = self.first, self.flat, self.inp
        return s

    def set(self, o: "_CNNState"):
        self.c, self.h, self.w, self.first, self.flat, self.t, self.inp = o.c, o.h, o.w, o.first, o.flat, o.t, o.inp

    def numel(self) -> int:
        return self.flat if self.flat is not None else self.c * self.h * self.w


def pool_out(size: int, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False) -> int:
    """Pooling output size (torch pooling_output_shape, aten/src/ATen/native/Pool.h):
    floor or ceil of (size + 2p - k)/s, + 1; with ceil_mode the last window
    must start inside the input or its left padding."""
    if not ceil_mode:
        return conv_out(size, kernel, stride, padding)
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _sized(path, li, t, k, s, pd, h, image, out):
    if out <= 0:
        raise CNNShapeError(path, li, f"{t} (kernel {k}, stride {s}, padding {pd}) on a {h}x{h} input gives an "
                                      f"empty output (size {out}) at image {image}", empty=True)


def _conv(node, ctx, st, name, out, k, s=1, pad=0, groups=1, bias=False, path="", li=0, image=0):
    if st.c % groups or out % groups:
        raise CNNShapeError(path, li, f"groups {groups} does not divide the {st.c} input and {out} output channels "
                                      f"(expected a common divisor of {st.c} and {out}, e.g. one of "
                                      f"{[g for g in range(1, min(st.c, out) + 1) if st.c % g == 0 and out % g == 0][-4:]})")
    ho, wo = conv_out(st.h, k, s, pad), conv_out(st.w, k, s, pad)
    _sized(path, li, "conv", k, s, pad, st.h, image, min(ho, wo))
    op = node.add(make("conv2d", name, ctx.p, n=ctx.n, c_in=st.c, h=st.h, w=st.w, c_out=out, kernel=k, stride=s,
                       padding=pad, groups=groups, bias=bias, input_grad=not st.first))
    ctx.saves_input(op, st.t, ctx.n * st.numel() * ctx.p.act_bytes)
    st.first = False
    st.c, st.h, st.w = out, ho, wo
    st.t = ctx.new(ctx.n * st.numel())
    return op


def _bn(node, ctx, st, name):
    op = node.add(make("batchnorm", name, ctx.p, n=ctx.n, channels=st.c, hw=st.h * st.w))
    ctx.saves_input(op, st.t, ctx.n * st.numel() * ctx.p.act_bytes)
    st.t = ctx.new(ctx.n * st.numel())
    return op


def _act(node, ctx, st, name, fn):
    """A pointwise activation. ReLU, sigmoid and tanh keep their output (ReLU
    in place, as torchvision, except on the input of a layer list, which a
    shortcut or another branch still reads); the others keep their input (an
    in-place ReLU6 / hardswish / SiLU keeps a copy of it: the same bytes)."""
    e = ctx.n * st.numel()
    op = node.add(make("activation", name, ctx.p, elements=e, fn=fn))
    if fn in _KEEPS_OUTPUT:
        op.saved_bytes = 0
        if fn != "relu" or st.t is st.inp:
            st.t = ctx.new(e)
        ctx.keep(op, st.t)
    else:
        ctx.saves_input(op, st.t, e * ctx.p.act_bytes)
        st.t = ctx.new(e)
    return op


def _se(node, ctx, st, name, L):
    """torchvision SqueezeExcitation (ops/misc.py): mean over H, W (saves
    nothing) -> fc1 1x1 conv with bias (saves the pooled input) -> activation
    -> fc2 1x1 conv with bias -> gate -> gate * x (saves x and the gate)."""
    n, c, hw = ctx.n, st.c, st.h * st.w
    x = st.t
    pool = node.add(make("pool", f"{name}.avgpool", ctx.p, n=n, channels=c, h_out=1, w_out=1, window=hw, kind="avg",
                         h_in=st.h, w_in=st.w, saves_input=False))
    ctx.read(pool, x)
    sub = _CNNState(c, 1, 1, ctx.new(n * c))
    sub.first = False
    _conv(node, ctx, sub, f"{name}.fc1", L.squeeze(c), 1, bias=True)
    _act(node, ctx, sub, f"{name}.activation", L.activation)
    _conv(node, ctx, sub, f"{name}.fc2", c, 1, bias=True)
    _act(node, ctx, sub, f"{name}.gate", L.gate)
    mul = node.add(make("channel_scale", f"{name}.scale", ctx.p, elements=n * c * hw, scales=n * c))
    mul.saved_bytes = 0
    ctx.save(mul, x)
    ctx.save(mul, sub.t)
    st.t = ctx.new(n * c * hw)


def _stride1(layers):
    """The layers with every stride set to 1 (the repeated blocks of a residual stage)."""
    out = []
    for L in layers:
        if L.type in ("conv", "maxpool", "avgpool", "resnet_stage"):
            L = L.model_copy(update={"stride": 1})
        elif L.type == "residual":
            L = L.model_copy(update={"body": _stride1(L.body), "shortcut": _stride1(L.shortcut)})
        elif L.type == "concat":
            L = L.model_copy(update={"branches": [_stride1(b) for b in L.branches]})
        out.append(L)
    return out


def _repeat(stack: Node, ctx, st, blocks: int, first, rest):
    """block0 = first(node); blocks 1..N-1 = rest(node). When a repeated block
    keeps the shape and leaves its output in the state its input arrived in
    (for the storage booking), it is built once and counted N-1 times;
    otherwise (a DenseNet block grows) each is built."""
    first(stack.add(Node("block0", "block")))
    if blocks == 1:
        return
    before, t_in = st.copy(), st.t
    snap = (t_in.saved, t_in.keeper, t_in.krep)
    blk = Node("block", "block", count=blocks - 1)
    ctx.rep += 1
    try:
        rest(blk)
    finally:
        ctx.rep -= 1
    if (st.c, st.h, st.w) == (before.c, before.h, before.w) and \
            (st.t.saved, st.t.keeper is not None) == (snap[0], snap[1] is not None):
        stack.add(blk)
        return
    t_in.saved, t_in.keeper, t_in.krep = snap
    st.set(before)
    for k in range(1, blocks):
        rest(stack.add(Node(f"block{k}", "block")))


def _resnet_block(ctx, st: _CNNState, kind, planes, stride, groups, wpg, expansion, node):
    """torchvision BasicBlock / Bottleneck, the 1x1 conv + BN downsample when the shape changes."""
    exp = expansion or (1 if kind == "basic" else 4)
    x = st.copy()
    if kind == "basic":
        _conv(node, ctx, st, "conv1", planes, 3, stride, 1)
        _bn(node, ctx, st, "bn1")
        _act(node, ctx, st, "relu1", "relu")
        _conv(node, ctx, st, "conv2", planes, 3, 1, 1)
        _bn(node, ctx, st, "bn2")
    else:
        width = int(planes * (wpg / 64.0)) * groups
        _conv(node, ctx, st, "conv1", width, 1)
        _bn(node, ctx, st, "bn1")
        _act(node, ctx, st, "relu1", "relu")
        _conv(node, ctx, st, "conv2", width, 3, stride, 1, groups=groups)
        _bn(node, ctx, st, "bn2")
        _act(node, ctx, st, "relu2", "relu")
        _conv(node, ctx, st, "conv3", planes * exp, 1)
        _bn(node, ctx, st, "bn3")
    if stride != 1 or x.c != planes * exp:
        x.first = False
        _conv(node, ctx, x, "downsample.conv", planes * exp, 1, stride)   # its input is conv1's: saved once
        _bn(node, ctx, x, "downsample.bn")
    add = node.add(make("add", "residual", ctx.p, elements=ctx.n * st.numel()))
    ctx.read(add, st.t)
    ctx.read(add, x.t)
    st.t = ctx.new(ctx.n * st.numel())
    _act(node, ctx, st, "relu_out", "relu")


def _residual_block(node, ctx, st, L, body, shortcut, path, li, image, repeated=False):
    """out = activation(body(x) + shortcut(x))."""
    x = st.copy()
    _cnn_layers(body, node, ctx, st, "", f"{path}.body", li, image)
    if shortcut:
        x.first = False
        _cnn_layers(shortcut, node, ctx, x, "shortcut.", f"{path}.shortcut", li, image)
    if (st.c, st.h, st.w) != (x.c, x.h, x.w):
        what = "the projection shortcut" if shortcut else "the block input (identity shortcut)"
        rep = f"repeated block (blocks 2-{L.blocks}: strides 1, identity shortcut): " if repeated else ""
        raise CNNShapeError(path, li, f"{rep}residual body output {st.c}x{st.h}x{st.w} does not match {what} "
                                      f"{x.c}x{x.h}x{x.w} (expected equal channels x height x width: add a shortcut "
                                      f"projection, e.g. [{{type: conv, out: {st.c}, kernel: 1, stride: 2, "
                                      f"bias: false}}, {{type: bn}}], or fix the body)")
    add = node.add(make("add", "add", ctx.p, elements=ctx.n * st.numel()))
    ctx.read(add, st.t)
    ctx.read(add, x.t)
    st.t = ctx.new(ctx.n * st.numel())
    if L.activation:
        _act(node, ctx, st, f"{L.activation}_out", L.activation)


def _concat_block(node, ctx, st, L, path, li, image):
    """torch.cat of the branches along channels (each branch reads the input,
    or with ``split`` an equal channel slice of it -- a view of the same storage)."""
    nb = len(L.branches)
    if L.split and st.c % nb:
        raise CNNShapeError(path, li, f"split: {nb} branches do not divide the {st.c} input channels "
                                      f"(expected a multiple of {nb})")
    outs = []
    for k, br in enumerate(L.branches):
        b = st.copy()
        if L.split:
            b.c = st.c // nb
        _cnn_layers(br, node, ctx, b, f"branch{k}.", f"{path}.branches[{k}]", li, image)
        outs.append(b)
    for k, b in enumerate(outs[1:], 1):
        if (b.h, b.w) != (outs[0].h, outs[0].w):
            raise CNNShapeError(path, li, f"concat branch {k} gives {b.h}x{b.w} pixels, branch 0 {outs[0].h}x"
                                          f"{outs[0].w} (expected the same height and width in every branch)")
    st.first = all(b.first for b in outs)
    st.c, st.h, st.w = sum(b.c for b in outs), outs[0].h, outs[0].w
    op = node.add(make("concat", "concat", ctx.p, elements=ctx.n * st.numel()))
    for b in outs:
        ctx.read(op, b.t)
    st.t = ctx.new(ctx.n * st.numel())


def _composite(L, parent, level, name, ctx, st, path, li, image):
    """resnet_stage, residual, concat: a node of `blocks` block nodes."""
    stack = parent.add(Node(name, level))
    if L.type == "resnet_stage":
        if conv_out(st.h, 3, L.stride, 1) <= 0:
            _sized(path, li, "resnet_stage", 3, L.stride, 1, st.h, image, conv_out(st.h, 3, L.stride, 1))
        _repeat(stack, ctx, st, L.blocks,
                lambda nd: _resnet_block(ctx, st, L.block, L.planes, L.stride, L.groups, L.width_per_group,
                                         L.expansion, nd),
                lambda nd: _resnet_block(ctx, st, L.block, L.planes, 1, L.groups, L.width_per_group,
                                         L.expansion, nd))
    elif L.type == "residual":
        rest = _stride1(L.body)
        _repeat(stack, ctx, st, L.blocks,
                lambda nd: _residual_block(nd, ctx, st, L, L.body, L.shortcut, path, li, image),
                lambda nd: _residual_block(nd, ctx, st, L, rest, [], path, li, image, repeated=True))
    else:
        _repeat(stack, ctx, st, L.blocks,
                lambda nd: _concat_block(nd, ctx, st, L, path, li, image),
                lambda nd: _concat_block(nd, ctx, st, L, path, li, image))
    return stack


def _cnn_layer(L, node, ctx, st, name, path, li, image):
    """One non-composite layer: its ops into ``node``; ``st`` moves on."""
    t, p, n = L.type, ctx.p, ctx.n
    if st.flat is not None:
        if t == "linear":
            op = node.add(make("linear", name, p, tokens=n, d_in=st.flat, d_out=L.out, bias=L.bias))
            ctx.saves_input(op, st.t, n * st.flat * p.act_bytes)
            st.flat = L.out
            st.t = ctx.new(n * st.flat)
        elif t in ACTIVATIONS:
            _act(node, ctx, st, name, t)
        elif t == "dropout":
            if ctx.training and L.p > 0:
                op = node.add(make("dropout", name, p, elements=n * st.flat))
                ctx.read(op, st.t)
                st.t = ctx.new(n * st.flat)
        elif t != "flatten":
            raise CNNShapeError(path, li, f"{t} layer after flatten (expected conv/pool layers before the flatten)")
        return
    e = n * st.numel()
    if t == "conv":
        _conv(node, ctx, st, name, L.out, L.kernel, L.stride, L.padding, L.groups, L.bias, path=path, li=li,
              image=image)
    elif t == "bn":
        _bn(node, ctx, st, name)
    elif t == "layernorm2d":   # torchvision LayerNorm2d: F.layer_norm over C of the channels-last view
        op = node.add(make("norm", name, p, rows=n * st.h * st.w, dim=st.c))
        ctx.saves_input(op, st.t, e * p.act_bytes)
        st.t = ctx.new(e)
    elif t in ACTIVATIONS:
        _act(node, ctx, st, name, t)
    elif t in ("maxpool", "avgpool"):
        s = L.stride or L.kernel
        ho = pool_out(st.h, L.kernel, s, L.padding, L.ceil_mode)
        wo = pool_out(st.w, L.kernel, s, L.padding, L.ceil_mode)
        _sized(path, li, t, L.kernel, s, L.padding, st.h, image, min(ho, wo))
        op = node.add(make("pool", name, p, n=n, channels=st.c, h_out=ho, w_out=wo, window=L.kernel ** 2,
                           kind="max" if t == "maxpool" else "avg", h_in=st.h, w_in=st.w))
        ctx.saves_input(op, st.t, e * p.act_bytes)
        st.h, st.w = ho, wo
        st.t = ctx.new(n * st.numel())
    elif t in ("adaptive_avgpool", "adaptive_maxpool"):
        o = L.output
        win = max(1, -(-st.h // o)) * max(1, -(-st.w // o))
        # a global average (1x1) is torch's mean, which keeps nothing
        glob = o == 1 and t == "adaptive_avgpool"
        op = node.add(make("pool", name, p, n=n, channels=st.c, h_out=o, w_out=o, window=win,
                           kind="avg" if t == "adaptive_avgpool" else "max", h_in=st.h, w_in=st.w,
                           saves_input=not glob))
        if glob:
            ctx.read(op, st.t)
        else:
            ctx.saves_input(op, st.t, e * p.act_bytes)
        st.h, st.w = o, o
        st.t = ctx.new(n * st.numel())
    elif t == "flatten":
        if path.count("[") > 1:
            raise CNNShapeError(path, li, "flatten inside a residual / concat block (expected it at the top level, "
                                          "after the conv and pool layers)")
        st.flat = st.c * st.h * st.w
    elif t == "dropout":
        if ctx.training and L.p > 0:
            op = node.add(make("dropout", name, p, elements=e))
            ctx.read(op, st.t)
            st.t = ctx.new(e)
    elif t == "linear":
        raise CNNShapeError(path, li, "linear layer before flatten (expected a flatten layer first)")
    elif t == "layer_scale":
        op = node.add(make("channel_scale", name, p, elements=e, scales=st.c, param=True))
        op.saved_bytes = 0
        ctx.save(op, st.t)          # x, for the parameter's gradient
        st.t = ctx.new(e)
    elif t == "se":
        _se(node, ctx, st, name, L)
    elif t == "channel_shuffle":
        if st.c % L.groups:
            raise CNNShapeError(path, li, f"channel_shuffle groups {L.groups} does not divide the {st.c} channels")
        op = node.add(make("concat", name, p, elements=e))   # view + transpose + contiguous: one copy
        ctx.read(op, st.t)
        st.t = ctx.new(e)
    else:  # pragma: no cover
        raise TypeError(t)


def _cnn_layers(layers, node, ctx, st, prefix, path, li, image):
    """A nested layer list (residual body / shortcut, concat branch)."""
    outer, st.inp = st.inp, st.t
    for j, L in enumerate(layers):
        where = f"{path}[{j}]"
        if st.flat is not None and L.type in _COMPOSITE:
            raise CNNShapeError(where, li, f"{L.type} layer after flatten (expected conv/pool layers before the "
                                           f"flatten)")
        if L.type in _COMPOSITE:
            _composite(L, node, "block", f"{prefix}{L.type}{j + 1}", ctx, st, where, li, image)
        else:
            _cnn_layer(L, node, ctx, st, f"{prefix}{L.type}{j + 1}", where, li, image)
    st.inp = outer


def build_cnn(spec: CNNSpec, sh: Shape, p: Precision) -> Node:
    img = sh.image or spec.image_size
    n = sh.batch
    model = Node(spec.name, "model")
    ctx = _Ctx(p, n, sh.training)
    st = _CNNState(spec.channels, img, img)
    st.t = st.inp = ctx.new(n * st.numel())
    cur = model.add(Node("stem", "block"))
    i = 0
    for li, L in enumerate(spec.layers):
        t = L.type
        path = f"layers[{li}]"
        if t in _COMPOSITE:
            if st.flat is not None:
                raise CNNShapeError(path, li, f"{t} layer after flatten (expected conv/pool layers before the "
                                              f"flatten)")
            _composite(L, model, "stack", f"stage{li}", ctx, st, path, li, img)
            cur = model.add(Node(f"after{li}", "block"))
            continue
        i += 1
        _cnn_layer(L, cur, ctx, st, f"{t}{i}", path, li, img)
    ctx.finish()
    model.children = [c for c in model.children if not (isinstance(c, Node) and not c.children)]
    return model


# --- RNN / MLP -------------------------------------------------------------
def build_rnn(spec: RNNSpec, sh: Shape, p: Precision) -> Node:
    b, s = sh.batch, sh.seq or spec.default_seq
    dirs = 2 if spec.bidirectional else 1
    model = Node(spec.name, "model")
    if spec.vocab_size:
        emb = model.add(Node("embeddings", "block"))
        emb.add(make("embedding", "token", p, tokens=b * s, rows=spec.vocab_size, dim=spec.input_size))
    st = model.add(Node("recurrent", "stack"))
    st.add(make("rnn", "layer0", p, cell=spec.cell, batch=b, seq=s, d_in=spec.input_size, hidden=spec.hidden_size,
                directions=dirs, bias=spec.bias, input_grad=bool(spec.vocab_size)))
    if spec.layers > 1:
        blk = st.add(Node("layers", "block", count=spec.layers - 1))
        blk.add(make("rnn", "layer", p, cell=spec.cell, batch=b, seq=s, d_in=spec.hidden_size * dirs,
                     hidden=spec.hidden_size, directions=dirs, bias=spec.bias))
    if spec.num_classes:
        head = model.add(Node("head", "block"))
        c = head.add(make("linear", "classifier", p, tokens=b, d_in=spec.hidden_size * dirs, d_out=spec.num_classes))
        c.saved_bytes = b * s * spec.hidden_size * dirs * p.act_bytes   # y[:, -1] is a view: keeps all of y
    return model


def build_mlp(spec: MLPSpec, sh: Shape, p: Precision) -> Node:
    b = sh.batch
    model = Node(spec.name, "model")
    blk = model.add(Node("layers", "block"))
    d = spec.input_size
    drop = sh.training and spec.dropout > 0
    for i, h in enumerate(spec.hidden):
        # the input is data: the first layer computes no input gradient
        blk.add(make("linear", f"fc{i}", p, tokens=b, d_in=d, d_out=h, bias=spec.bias, input_grad=i > 0))
        a = blk.add(make("activation", f"act{i}", p, elements=b * h, fn=spec.activation))
        if spec.activation in ("relu", "tanh", "sigmoid") and not drop:
            a.saved_bytes = 0   # keeps its output, which the next linear saves: one storage, booked there
        if drop:
            blk.add(make("dropout", f"dropout{i}", p, elements=b * h))
        d = h
    blk.add(make("linear", "out", p, tokens=b, d_in=d, d_out=spec.output_size, bias=spec.bias))
    return model
