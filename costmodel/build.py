"""Expand a model spec + workload shape into a cost tree of ops.

Each builder mirrors the reference implementation named in the spec
(Hugging Face transformers, torchvision, torch.nn): the same parameters, the
same matrix products, and the same tensors saved for backward.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ops import INDEX_BYTES, Precision, conv_out, make
from .specs.model import Biases, CNNSpec, MLPSpec, RNNSpec, TransformerSpec, ViTSpec
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


def _ffn(blk: Node, p: Precision, *, tokens: int, d: int, d_ff: int, act: str, bias: bool, drop: bool, tp: int = 1):
    ff = d_ff // tp
    if act in ("swiglu", "geglu"):
        blk.add(make("linear", "gate_proj", p, tokens=tokens, d_in=d, d_out=ff, bias=bias))
        blk.add(make("linear", "up_proj", p, tokens=tokens, d_in=d, d_out=ff, bias=bias, saves_input=False))
        blk.add(make("glu", "act", p, elements=tokens * ff, fn="silu" if act == "swiglu" else "gelu"))
    else:
        blk.add(make("linear", "fc1", p, tokens=tokens, d_in=d, d_out=ff, bias=bias))
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
                   pos_bias=(spec.position == "relative_bias" and not cross),
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
    if pre:
        fn = norm("ffn.norm")
        if spec.parallel_residual:   # reads the layer input x, already saved by attn.norm: keep only its stats
            fn.saved_bytes -= tokens * d * p.act_bytes
    _ffn(blk, p, tokens=tokens, d=d, d_ff=spec.d_ff, act=spec.activation, bias=spec.biases.ffn, drop=drop, tp=sh.tp)
    blk.add(make("add", "ffn.residual", p, elements=tokens * d))
    if not pre:
        norm("ffn.norm")
    return blk


def _embeddings(spec: TransformerSpec, p: Precision, sh: Shape, seq: int, *, shared_tokens: bool,
                pos_start: int = 0) -> Node:
    node = Node("embeddings", "block")
    b, d = sh.batch, spec.d_model
    t = b * seq
    tok = node.add(make("embedding", "token", p, tokens=t, rows=spec.vocab_size, dim=d))
    if shared_tokens:     # decoder of a shared-embedding encoder-decoder: same table
        tok.params, tok.param_shapes = 0, ()
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
    return st


def _lm_head(spec: TransformerSpec, p: Precision, sh: Shape, seq: int) -> Node:
    head = Node("lm_head", "block")
    t = sh.batch * seq
    if spec.lm_head_transform:   # HF BertPredictionHeadTransform: dense + activation + LayerNorm
        head.add(make("linear", "transform.dense", p, tokens=t, d_in=spec.d_model, d_out=spec.d_model))
        head.add(make("activation", "transform.act", p, elements=t * spec.d_model,
                      fn={"swiglu": "silu", "geglu": "gelu"}.get(spec.activation, spec.activation)))
        head.add(make("norm", "transform.norm", p, rows=t, dim=spec.d_model, kind=spec.norm, bias=spec.norm_bias))
    lm = head.add(make("linear", "lm_head", p, tokens=t, d_in=spec.d_model, d_out=spec.vocab_size,
                       bias=spec.biases.lm_head))
    if spec.tied_embeddings:     # weight shared with the token embedding
        lm.params = lm.params - spec.d_model * spec.vocab_size
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
class _CNNState:
    def __init__(self, c, h, w):
        self.c, self.h, self.w = c, h, w
        self.first = True
        self.flat = None


def _conv(node, p, st: _CNNState, name, n, out, k, s=1, pad=0, groups=1, bias=False):
    op = node.add(make("conv2d", name, p, n=n, c_in=st.c, h=st.h, w=st.w, c_out=out, kernel=k, stride=s,
                       padding=pad, groups=groups, bias=bias, input_grad=not st.first))
    st.first = False
    st.c, st.h, st.w = out, op.dims["h_out"], op.dims["w_out"]
    return op


def _bn(node, p, st, name, n):
    node.add(make("batchnorm", name, p, n=n, channels=st.c, hw=st.h * st.w))


def _relu(node, p, st, name, n, saves=False):
    op = node.add(make("activation", name, p, elements=n * st.c * st.h * st.w, fn="relu"))
    if not saves:   # in-place ReLU whose output the next conv/pool saves anyway
        op.saved_bytes = 0
    return op


def _resnet_block(p, st: _CNNState, n, kind, planes, stride, groups, wpg, expansion, name, count) -> Node:
    blk = Node(name, "block", count=count)
    exp = expansion or (1 if kind == "basic" else 4)
    c_in, h_in, w_in = st.c, st.h, st.w
    if kind == "basic":
        _conv(blk, p, st, "conv1", n, planes, 3, stride, 1)
        _bn(blk, p, st, "bn1", n)
        _relu(blk, p, st, "relu1", n)
        _conv(blk, p, st, "conv2", n, planes, 3, 1, 1)
        _bn(blk, p, st, "bn2", n)
    else:
        width = int(planes * (wpg / 64.0)) * groups
        _conv(blk, p, st, "conv1", n, width, 1)
        _bn(blk, p, st, "bn1", n)
        _relu(blk, p, st, "relu1", n)
        _conv(blk, p, st, "conv2", n, width, 3, stride, 1, groups=groups)
        _bn(blk, p, st, "bn2", n)
        _relu(blk, p, st, "relu2", n)
        _conv(blk, p, st, "conv3", n, planes * exp, 1)
        _bn(blk, p, st, "bn3", n)
    if stride != 1 or c_in != planes * exp:
        ds = _CNNState(c_in, h_in, w_in)
        ds.first = False
        op = _conv(blk, p, ds, "downsample.conv", n, planes * exp, 1, stride)
        op.saved_bytes = 0          # its input is the block input, saved by conv1
        _bn(blk, p, ds, "downsample.bn", n)
    blk.add(make("add", "residual", p, elements=n * st.c * st.h * st.w))
    _relu(blk, p, st, "relu_out", n)
    return blk


def build_cnn(spec: CNNSpec, sh: Shape, p: Precision) -> Node:
    img = sh.image or spec.image_size
    n = sh.batch
    st = _CNNState(spec.channels, img, img)
    model = Node(spec.name, "model")
    cur = model.add(Node("stem", "block"))
    i = 0
    layers = spec.layers
    for li, L in enumerate(layers):
        nxt = layers[li + 1].type if li + 1 < len(layers) else None
        t = L.type
        if t == "resnet_stage":
            stage = model.add(Node(f"stage{li}", "stack"))
            stage.add(_resnet_block(p, st, n, L.block, L.planes, L.stride, L.groups, L.width_per_group,
                                    L.expansion, "block0", 1))
            if L.blocks > 1:
                stage.add(_resnet_block(p, st, n, L.block, L.planes, 1, L.groups, L.width_per_group,
                                        L.expansion, "block", L.blocks - 1))
            cur = model.add(Node(f"after{li}", "block"))
            continue
        i += 1
        name = f"{t}{i}"
        if st.flat is None:
            if t == "conv":
                _conv(cur, p, st, name, n, L.out, L.kernel, L.stride, L.padding, L.groups, L.bias)
            elif t == "bn":
                _bn(cur, p, st, name, n)
            elif t in ("relu", "gelu", "silu", "tanh", "sigmoid"):
                op = cur.add(make("activation", name, p, elements=n * st.c * st.h * st.w, fn=t))
                nxt_saves = nxt in ("conv", "maxpool", "avgpool", "adaptive_maxpool", "linear", "flatten", None) or (
                    nxt == "adaptive_avgpool" and layers[li + 1].output != 1)
                if t in ("relu", "tanh", "sigmoid") and nxt_saves:   # they keep their output: the consumer's input
                    op.saved_bytes = 0
            elif t in ("maxpool", "avgpool"):
                s = L.stride or L.kernel
                ho, wo = conv_out(st.h, L.kernel, s, L.padding), conv_out(st.w, L.kernel, s, L.padding)
                if ho <= 0 or wo <= 0:
                    raise ValueError(f"layer {li} ({t}): {st.h}x{st.w} input gives an empty output")
                cur.add(make("pool", name, p, n=n, channels=st.c, h_out=ho, w_out=wo, window=L.kernel ** 2,
                             kind="max" if t == "maxpool" else "avg", h_in=st.h, w_in=st.w))
                st.h, st.w = ho, wo
            elif t in ("adaptive_avgpool", "adaptive_maxpool"):
                o = L.output
                win = max(1, -(-st.h // o)) * max(1, -(-st.w // o))
                # A global average (1x1) is torch's mean, which keeps nothing -- but after a ResNet
                # stage the in-place ReLU before it keeps that same tensor: booked here, its consumer.
                keeps = o != 1 or (li > 0 and layers[li - 1].type == "resnet_stage")
                cur.add(make("pool", name, p, n=n, channels=st.c, h_out=o, w_out=o, window=win,
                             kind="avg" if t == "adaptive_avgpool" else "max", h_in=st.h, w_in=st.w,
                             saves_input=keeps))
                st.h, st.w = o, o
            elif t == "flatten":
                st.flat = st.c * st.h * st.w
            elif t == "dropout":
                if sh.training and L.p > 0:
                    cur.add(make("dropout", name, p, elements=n * st.c * st.h * st.w))
            elif t == "linear":
                raise ValueError(f"layer {li}: linear before flatten (add a flatten layer)")
        else:
            if t == "linear":
                cur.add(make("linear", name, p, tokens=n, d_in=st.flat, d_out=L.out, bias=L.bias))
                st.flat = L.out
            elif t in ("relu", "gelu", "silu", "tanh", "sigmoid"):
                op = cur.add(make("activation", name, p, elements=n * st.flat, fn=t))
                if t in ("relu", "tanh", "sigmoid") and nxt in ("linear", None):   # output = next linear's input
                    op.saved_bytes = 0
            elif t == "dropout":
                if sh.training and L.p > 0:
                    cur.add(make("dropout", name, p, elements=n * st.flat))
            elif t == "flatten":
                pass
            else:
                raise ValueError(f"layer {li}: {t} after flatten")
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
