"""Model spec schema (models/*.yaml): architectures as hyperparameters, not code.

``arch`` selects the family: transformer (encoder, decoder, encoder-decoder),
vit, cnn, rnn, mlp.  Every spec names the real implementation it mirrors in
``reference`` so parameter counts can be checked to the parameter.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class Reference(_Strict):
    library: str = Field(description="e.g. 'transformers 4.57', 'torchvision 0.29'")
    cls: str = Field(alias="class", description="e.g. 'BertModel'")
    config: str = Field("", description="config name / hub id / constructor call")
    params: Optional[int] = Field(None, description="parameter count of the reference, if known")
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Common(_Strict):
    name: str
    description: str = ""
    reference: Optional[Reference] = None
    notes: str = ""


class Biases(_Strict):
    qkv: bool = True
    attn_out: bool = True
    ffn: bool = True
    lm_head: bool = False


class TransformerSpec(_Common):
    arch: Literal["transformer"]
    structure: Literal["encoder", "decoder", "encoder-decoder"]
    layers: PositiveInt = Field(description="encoder layers (or decoder layers of a decoder-only model)")
    decoder_layers: Optional[PositiveInt] = Field(None, description="decoder layers of an encoder-decoder model")
    d_model: PositiveInt
    heads: PositiveInt
    kv_heads: Optional[PositiveInt] = Field(None, description="KV heads (GQA/MQA); default = heads")
    d_head: Optional[PositiveInt] = Field(None, description="default d_model / heads")
    d_ff: PositiveInt
    vocab_size: PositiveInt
    max_positions: PositiveInt
    default_seq: Optional[PositiveInt] = None
    position: Literal["learned", "sinusoidal", "relative_bias", "rotary", "alibi", "none"] = Field(
        "learned", description="alibi: a fixed per-head linear bias on the attention scores, no parameters "
                               "(Press et al. 2022; BLOOM, Falcon-RW)")
    position_offset: int = Field(0, ge=0, description="extra rows in the learned position table (BART: 2)")
    relative_buckets: PositiveInt = 32
    token_types: int = Field(0, ge=0, description="segment embeddings (BERT: 2)")
    embedding_norm: bool = Field(False, description="LayerNorm right after the embeddings (BERT, BART, BLOOM)")
    embed_scale: bool = Field(False, description="token embeddings multiplied by sqrt(d_model) (Gemma; Vaswani "
                                                 "et al. 2017 sec. 3.4): one elementwise op, no parameters")
    embed_dim: Optional[PositiveInt] = Field(None, description="token embedding width when it differs from d_model "
                                                               "(OPT-350m word_embed_proj_dim): project_in (e -> d) "
                                                               "after the lookup, project_out (d -> e) after the "
                                                               "stack, both without bias; a tied LM head is e wide")
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_bias: bool = True
    norm_position: Literal["pre", "post"] = "pre"
    final_norm: bool = True
    activation: Literal["relu", "gelu", "gelu_new", "silu", "swiglu", "geglu"] = "gelu"
    biases: Biases = Biases()
    tied_embeddings: bool = True
    lm_head: bool = True
    lm_head_transform: bool = Field(False, description="MLM head (BERT/RoBERTa/DistilBERT *ForMaskedLM): dense "
                                                       "d x d + activation + norm before the vocabulary projection")
    parallel_residual: bool = Field(False, description="attention and FFN read the same layer input and both add "
                                                       "to it: x + attn(norm1(x)) + ffn(norm2(x)) (GPT-NeoX)")
    shared_norm: bool = Field(False, description="parallel residual with one norm read by both branches: "
                                                 "x + attn(norm(x)) + ffn(norm(x)) (GPT-J, CodeGen, Phi, Falcon-7B, "
                                                 "StableLM); needs parallel_residual")
    rotary_fraction: float = Field(1.0, gt=0, le=1, description="fraction of each head's dims that get rotary "
                                                               "embeddings (GPT-NeoX rotary_pct: 0.25)")
    pooler: bool = Field(False, description="BERT pooler: dense + tanh on the first token")
    num_classes: int = Field(0, ge=0, description="classification head on the first token")
    causal: Optional[bool] = Field(None, description="default: True for decoders")
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self):
        dh = self.d_head or (self.d_model // self.heads)
        if self.d_head is None and self.d_model % self.heads:
            raise ValueError(f"heads ({self.heads}) does not divide d_model ({self.d_model}) "
                             f"(expected a divisor of {self.d_model}, or set d_head)")
        kv = self.kv_heads or self.heads
        if self.heads % kv:
            raise ValueError(f"kv_heads ({kv}) does not divide heads ({self.heads}) "
                             f"(expected one of {_divisors(self.heads)})")
        if self.structure == "encoder-decoder" and self.decoder_layers is None:
            object.__setattr__(self, "decoder_layers", self.layers)
        if self.shared_norm and not (self.parallel_residual and self.norm_position == "pre"):
            raise ValueError("shared_norm needs parallel_residual: true and norm_position: pre")
        if self.embed_dim is not None and self.embed_dim != self.d_model and (
                self.structure != "decoder" or self.lm_head_transform or self.pooler or self.num_classes):
            raise ValueError("embed_dim (OPT-350m) is supported for decoder-only models without pooler, "
                             "classifier or MLM transform")
        del dh
        return self

    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.heads

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def token_dim(self) -> int:
        """Width of the token embedding table (and of a tied LM head's input)."""
        return self.embed_dim or self.d_model

    @property
    def seq_default(self) -> int:
        return self.default_seq or min(self.max_positions, 512 if self.structure != "decoder" else self.max_positions)


class ViTSpec(_Common):
    arch: Literal["vit"]
    image_size: PositiveInt = 224
    patch_size: PositiveInt
    channels: PositiveInt = 3
    layers: PositiveInt
    d_model: PositiveInt
    heads: PositiveInt
    d_ff: PositiveInt
    num_classes: int = Field(1000, ge=0)
    class_token: bool = True
    pooler: bool = Field(False, description="dense + tanh on the class token (Hugging Face ViTModel)")
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self):
        if self.d_model % self.heads:
            raise ValueError(f"heads ({self.heads}) does not divide d_model ({self.d_model}) "
                             f"(expected a divisor of {self.d_model})")
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size ({self.patch_size}) does not divide image_size ({self.image_size}) "
                             f"(expected a divisor of {self.image_size})")
        return self


# --- CNN: a list of layers -------------------------------------------------
# Channels, height and width flow from layer to layer (a conv gives only its
# output channels); the composite layers below (residual, se, concat) hold
# ordinary layer lists, nested, so one vocabulary covers the torchvision
# families: ResNet/RegNet (residual + projection shortcut, grouped convs, SE),
# MobileNetV2/V3 and EfficientNet (depthwise conv = groups equal to channels,
# relu6 / hardswish / silu, SE with a sigmoid or hardsigmoid gate), ConvNeXt
# (depthwise 7x7, layernorm2d, 1x1 convs for its channel-last Linear layers --
# same parameters and FLOPs -- and layer_scale), AlexNet/VGG (plain lists) and
# Inception / DenseNet / SqueezeNet / ShuffleNet (concat).
# Not modelled: stochastic depth (torchvision StochasticDepth, "row" mode) has
# no parameters and no matmul FLOPs -- one multiply by a per-sample (N,1,1,1)
# mask that saves N values -- so a spec leaves it out (see the model notes).
ACTIVATIONS = ("relu", "relu6", "gelu", "silu", "tanh", "sigmoid", "hardswish", "hardsigmoid")
ActName = Literal["relu", "relu6", "gelu", "silu", "tanh", "sigmoid", "hardswish", "hardsigmoid"]


class Conv(_Strict):
    type: Literal["conv"]
    out: PositiveInt
    kernel: PositiveInt
    stride: PositiveInt = 1
    padding: int = Field(0, ge=0)
    groups: PositiveInt = Field(1, description="grouped conv; groups = input channels = out is depthwise")
    bias: bool = True


class BatchNorm(_Strict):
    type: Literal["bn"]


class LayerNorm2d(_Strict):
    """LayerNorm over the channels at every pixel (torchvision LayerNorm2d,
    ConvNeXt): weight and bias of C each; an affine LayerNorm of a channels-last
    tensor is the same op."""
    type: Literal["layernorm2d"]


class Act(_Strict):
    type: ActName


class Pool(_Strict):
    type: Literal["maxpool", "avgpool"]
    kernel: PositiveInt
    stride: Optional[PositiveInt] = None
    padding: int = Field(0, ge=0)
    ceil_mode: bool = Field(False, description="round the output size up (torch ceil_mode; GoogLeNet, SqueezeNet)")


class AdaptivePool(_Strict):
    type: Literal["adaptive_avgpool", "adaptive_maxpool"]
    output: PositiveInt = 1


class Flatten(_Strict):
    type: Literal["flatten"]


class Linear(_Strict):
    type: Literal["linear"]
    out: PositiveInt
    bias: bool = True


class Dropout(_Strict):
    type: Literal["dropout"]
    p: float = Field(0.5, ge=0, lt=1)


class LayerScale(_Strict):
    """Multiply by a learned per-channel (C, 1, 1) parameter (ConvNeXt layer_scale)."""
    type: Literal["layer_scale"]


class SqueezeExcite(_Strict):
    """torchvision SqueezeExcitation (Hu et al. 2018): global average pool ->
    1x1 conv (bias) to the squeeze channels -> activation -> 1x1 conv (bias)
    back -> gate -> multiply the input channel-wise. Squeeze channels:
    ``reduce_channels``, or ``ratio`` x the SE input channels, rounded (give
    reduce_channels to match a reference exactly: torchvision's rules differ
    per family)."""
    type: Literal["se"]
    reduce_channels: Optional[PositiveInt] = None
    ratio: Optional[float] = Field(None, gt=0, le=1)
    activation: ActName = "relu"
    gate: Literal["sigmoid", "hardsigmoid"] = "sigmoid"

    @model_validator(mode="after")
    def _check(self):
        if (self.reduce_channels is None) == (self.ratio is None):
            raise ValueError("reduce_channels or ratio: give exactly one (the squeeze width, or its fraction "
                             "of the input channels)")
        return self

    def squeeze(self, channels: int) -> int:
        return self.reduce_channels or max(1, int(round(self.ratio * channels)))


class ResStage(_Strict):
    """A ResNet stage (torchvision semantics): `blocks` residual blocks, the
    first with `stride` and a 1x1 conv + BN downsample when the shape changes."""
    type: Literal["resnet_stage"]
    block: Literal["basic", "bottleneck"]
    planes: PositiveInt
    blocks: PositiveInt
    stride: PositiveInt = 1
    expansion: Optional[PositiveInt] = None
    groups: PositiveInt = 1
    width_per_group: PositiveInt = 64


class Residual(_Strict):
    """out = activation(body(x) + shortcut(x)). ``shortcut`` is a layer list
    (a projection: 1x1 conv + bn) or absent/empty for the identity; body and
    shortcut outputs must have the same shape. ``blocks: N`` stacks N blocks:
    the first as written, the other N-1 identical to it except that every
    stride is 1 and the shortcut is the identity (the torchvision ResNet /
    RegNet stage rule) -- built once and counted N-1 times. Write a first
    block that differs in more than that (MobileNet / EfficientNet expansion
    widths, RegNet SE widths) as its own layer(s) before the residual."""
    type: Literal["residual"]
    body: list["CNNLayer"] = Field(min_length=1)
    shortcut: list["CNNLayer"] = Field(default_factory=list)
    activation: Optional[ActName] = Field(None, description="after the add (ResNet, RegNet: relu)")
    blocks: PositiveInt = 1


class Concat(_Strict):
    """torch.cat of the branches' outputs along the channels. Every branch
    reads the layer input (``split: true``: an equal slice of its channels,
    ShuffleNetV2); an empty branch passes its input through (DenseNet).
    ``blocks: N`` applies the layer N times in a row (a DenseNet dense block)."""
    type: Literal["concat"]
    branches: list[list["CNNLayer"]] = Field(min_length=2)
    split: bool = False
    blocks: PositiveInt = 1


class ChannelShuffle(_Strict):
    """ShuffleNet channel shuffle: a permutation of the channels, 0 FLOPs."""
    type: Literal["channel_shuffle"]
    groups: PositiveInt = 2


CNNLayer = Annotated[Union[Conv, BatchNorm, LayerNorm2d, Act, Pool, AdaptivePool, Flatten, Linear, Dropout,
                           LayerScale, SqueezeExcite, ResStage, Residual, Concat, ChannelShuffle],
                     Field(discriminator="type")]
Residual.model_rebuild()
Concat.model_rebuild()


class CNNSpec(_Common):
    arch: Literal["cnn"]
    image_size: PositiveInt = 224
    channels: PositiveInt = 3
    layers: list[CNNLayer] = Field(min_length=1)


class RNNSpec(_Common):
    arch: Literal["rnn"]
    cell: Literal["lstm", "gru", "rnn"]
    input_size: PositiveInt
    hidden_size: PositiveInt
    layers: PositiveInt = 1
    bidirectional: bool = False
    bias: bool = True
    vocab_size: int = Field(0, ge=0, description="input embedding table (0 = none)")
    num_classes: int = Field(0, ge=0, description="output projection from the last hidden state (0 = none)")
    default_seq: PositiveInt = 128


class MLPSpec(_Common):
    arch: Literal["mlp"]
    input_size: PositiveInt
    hidden: list[PositiveInt] = Field(min_length=0)
    output_size: PositiveInt
    activation: Literal["relu", "gelu", "silu", "tanh", "sigmoid"] = "relu"
    bias: bool = True
    dropout: float = Field(0.0, ge=0, lt=1)


ModelSpec = Annotated[Union[TransformerSpec, ViTSpec, CNNSpec, RNNSpec, MLPSpec], Field(discriminator="arch")]
