"""The workload: what is run, how, on how many devices (resolved inputs)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw", "lamb", "adafactor", "adam-8bit", "lion")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "fp8")


class Workload(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=False)

    batch: PositiveInt = Field(1, description="global batch: sequences/images per optimizer step")
    micro_batch: Optional[PositiveInt] = Field(None, description="per device per forward (default batch/dp)")
    seq: Optional[PositiveInt] = Field(None, description="(encoder) sequence length; default: the model's")
    target_seq: Optional[PositiveInt] = Field(None, description="decoder length of encoder-decoder models")
    image: Optional[PositiveInt] = Field(None, description="image side in pixels (CNN / ViT)")
    precision: Optional[Literal["fp32", "tf32", "fp16", "bf16", "fp8"]] = None
    mode: Literal["train", "inference"] = "train"
    gen_tokens: NonNegativeInt = Field(128, description="inference: tokens generated after the prompt")

    # parallelism (Megatron-LM / ZeRO)
    gpus: Optional[PositiveInt] = None
    dp: Optional[PositiveInt] = None
    tp: PositiveInt = 1
    pp: PositiveInt = 1
    interleave: PositiveInt = Field(1, description="virtual pipeline stages per device (Narayanan et al. 2021)")
    sequence_parallel: bool = False
    zero: Literal[0, 1, 2, 3] = 0
    overlap_comm: bool = Field(True, description="overlap the data-parallel gradient reduction with backward")

    # memory-saving choices
    recompute: Literal["none", "selective", "full"] = "none"
    flash: bool = False
    optimizer: Literal["sgd", "sgd-momentum", "adam", "adamw", "lamb", "adafactor", "adam-8bit", "lion"] = "adamw"
    master_weights: bool = Field(True, description="16-bit training keeps fp32 master weights")
    fp32_grads: bool = Field(False, description="16-bit training accumulates gradients in fp32")
    optimizer_impl: Literal["fused", "foreach", "single-tensor"] = Field(
        "fused", description="fused: one kernel per step reads weights, grads, states and writes weights, states "
                             "(torch fused=True, apex FusedAdam); foreach / single-tensor: torch.optim's unfused "
                             "kernels, e.g. 8 per AdamW tensor, 20 words moved per parameter in fp32 "
                             "(torch/optim/adam.py _multi_tensor_adam / _single_tensor_adam)")
    zero_grad: Literal["set_to_none", "zero"] = Field(
        "set_to_none", description="set_to_none: backward's gradient becomes .grad (torch >= 2.0 default); "
                                   "zero: zero_grad(set_to_none=False), a zero-fill plus an in-place "
                                   "accumulation grad += new (read 2, write 1) per parameter")

    # framework overhead, explicit lines (never hidden in a factor)
    cuda_context_bytes: float = Field(5.0e8, ge=0, description="CUDA context + library workspaces per device")
    allocator_slack: float = Field(0.05, ge=0, le=1, description="caching-allocator fragmentation, fraction")

    # whole run
    tokens: Optional[PositiveFloat] = None
    steps: Optional[PositiveInt] = None
    epochs: Optional[PositiveFloat] = None
    dataset_tokens: Optional[PositiveFloat] = None
    dataset_samples: Optional[PositiveFloat] = None
    price: Optional[PositiveFloat] = Field(None, description="USD per device-hour, overrides the hardware's")
    utilization_power: float = Field(1.0, gt=0, le=1, description="fraction of TDP drawn while busy")
    pue: float = Field(1.0, ge=1, description="data-centre power usage effectiveness")
