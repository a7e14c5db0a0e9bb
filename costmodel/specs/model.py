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
    position: Literal["learned", "sinusoidal", "relative_bias", "rotary", "none"] = "learned"
    position_offset: int = Field(0, ge=0, description="extra rows in the learned position table (BART: 2)")
    relative_buckets: PositiveInt = 32
    token_types: int = Field(0, ge=0, description="segment embeddings (BERT: 2)")
    embedding_norm: bool = Field(False, description="LayerNorm right after the embeddings (BERT, BART)")
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
                                                       "to it: x + attn(norm1(x)) + ffn(norm2(x)) (GPT-J, GPT-NeoX)")
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
        del dh
        return self

    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.heads

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

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
class Conv(_Strict):
    type: Literal["conv"]
    out: PositiveInt
    kernel: PositiveInt
    stride: PositiveInt = 1
    padding: int = Field(0, ge=0)
    groups: PositiveInt = 1
    bias: bool = True


class BatchNorm(_Strict):
    type: Literal["bn"]


class Act(_Strict):
    type: Literal["relu", "gelu", "silu", "tanh", "sigmoid"]


class Pool(_Strict):
    type: Literal["maxpool", "avgpool"]
    kernel: PositiveInt
    stride: Optional[PositiveInt] = None
    padding: int = Field(0, ge=0)


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


CNNLayer = Annotated[Union[Conv, BatchNorm, Act, Pool, AdaptivePool, Flatten, Linear, Dropout, ResStage],
                     Field(discriminator="type")]


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
