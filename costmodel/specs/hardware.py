"""Hardware spec schema (hardware/*.yaml).

All numbers are in base SI units: FLOP/s, bytes, bytes/s, watts, USD.
Peaks are *dense* (no 2:4 sparsity); every number cites a datasheet in ``sources``.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

DTYPES = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class Peak(_Strict):
    flops: PositiveFloat = Field(description="dense peak, FLOP/s")
    unit: Literal["tensor", "vector", "matrix"] = Field(description="tensor/matrix core or vector (CUDA-core/VPU) unit")


class PeakTable(_Strict):
    fp64: Optional[Peak] = None
    fp32: Optional[Peak] = None
    tf32: Optional[Peak] = None
    fp16: Optional[Peak] = None
    bf16: Optional[Peak] = None
    fp8: Optional[Peak] = None
    int8: Optional[Peak] = None


class VectorTable(_Strict):
    """Peak of the non-matrix units, used for elementwise / reduction ops."""
    fp32: Optional[PositiveFloat] = None
    fp16: Optional[PositiveFloat] = None
    bf16: Optional[PositiveFloat] = None


class Memory(_Strict):
    capacity_bytes: PositiveFloat
    bandwidth: PositiveFloat = Field(description="HBM bandwidth, bytes/s")
    type: str = ""
    l2_bytes: Optional[PositiveFloat] = Field(None, description="L2 cache / on-chip SRAM, bytes")


class Link(_Strict):
    name: str = ""
    bandwidth: PositiveFloat = Field(description="bytes/s per device, one direction")


class Interconnect(_Strict):
    intra_node: Link
    inter_node: Link
    devices_per_node: PositiveInt = 8


class Price(_Strict):
    usd_per_hour: PositiveFloat
    source: str
    date: str


class Efficiency(_Strict):
    """Achievable fraction of peak, per op class. 1.0 = ideal roofline.

    ``calibrate`` fills these (and the size-dependent curves) from measurements.
    """
    matmul: float = Field(1.0, gt=0, le=1)
    attention: float = Field(1.0, gt=0, le=1)
    conv: float = Field(1.0, gt=0, le=1)
    elementwise: float = Field(1.0, gt=0, le=1)
    memory: float = Field(1.0, gt=0, le=1, description="fraction of HBM bandwidth achieved")
    comm: float = Field(1.0, gt=0, le=1, description="fraction of link bandwidth achieved")


class CalibrationCurve(_Strict):
    """efficiency(flops) = max_eff * flops / (flops + half_flops): a saturating fit."""
    max_eff: float = Field(gt=0, le=1)
    half_flops: float = Field(ge=0)


class MemoryCurve(_Strict):
    """Cache-aware memory efficiency of one op class: the fraction of
    ``memory.bandwidth`` an op achieves as a function of its working set
    ``ws`` (bytes it touches). A share ``h = cache_bytes / (cache_bytes + ws)``
    of the traffic is served at ``cache_eff``, the rest at ``dram_eff``:

        h = 1 / (1 + (ws / cache_bytes)^order)
        1 / eff(ws) = h / cache_eff + (1 - h) / dram_eff

    ``order`` sets how sharp the step at ``cache_bytes`` is (1: gradual; large:
    a cliff, as for a streaming working set that just overflows an LRU cache).
    Both efficiencies may exceed 1 (caches are faster than DRAM / HBM;
    ``memory.bandwidth`` may be a multi-core or a conservative figure)."""
    cache_eff: float = Field(gt=0, le=100)
    dram_eff: float = Field(gt=0, le=100)
    cache_bytes: float = Field(gt=0, description="working set at which half the traffic hits the cache, bytes")
    order: float = Field(1.0, ge=0.25, le=16)

    def efficiency(self, ws: float) -> float:
        h = 1.0 / (1.0 + (max(ws, 0.0) / self.cache_bytes) ** self.order)
        return 1.0 / (h / self.cache_eff + (1.0 - h) / self.dram_eff)


class Calibration(_Strict):
    source: str
    date: str
    curves: dict[str, CalibrationCurve] = {}
    memory_eff: Optional[float] = Field(None, gt=0, le=1)
    memory_curves: dict[str, MemoryCurve] = Field(
        {}, description="per op class (elementwise, optimizer): size-dependent memory efficiency; "
                        "classes without one use memory_eff")
    launch_overhead_s: float = Field(0.0, ge=0)
    update_overhead_s: float = Field(0.0, ge=0, description="host time per parameter tensor of an optimizer step "
                                                           "(torch.optim's per-tensor Python loop), s")
    notes: str = ""


class Hardware(_Strict):
    name: str
    display_name: str
    vendor: str
    kind: Literal["gpu", "tpu", "cpu", "accelerator"]
    variant: str = ""
    peak: PeakTable
    vector: VectorTable = VectorTable()
    memory: Memory
    cores: Optional[PositiveInt] = None
    core_name: str = "SM"
    interconnect: Interconnect
    tdp_watts: PositiveFloat
    price: Optional[Price] = None
    efficiency: Efficiency = Efficiency()
    calibration: Optional[Calibration] = None
    sources: list[str] = Field(min_length=1)
    notes: str = ""

    # -- derived ---------------------------------------------------------
    def peak_flops(self, dtype: str) -> float | None:
        p = getattr(self.peak, dtype, None)
        return p.flops if p is not None else None

    def vector_flops(self, dtype: str) -> float:
        """Peak for elementwise work in ``dtype``; falls back to the fp32 vector
        peak, then to the fp32 entry of the peak table."""
        v = getattr(self.vector, dtype, None) if dtype in ("fp32", "fp16", "bf16") else None
        if v:
            return v
        if self.vector.fp32:
            return self.vector.fp32
        p = self.peak.fp32 or self.peak.bf16 or self.peak.fp16
        return p.flops

    def ridge_point(self, dtype: str) -> float | None:
        """FLOP/byte above which a kernel is compute-bound (peak / bandwidth)."""
        p = self.peak_flops(dtype)
        return p / self.memory.bandwidth if p else None

    def supported_dtypes(self) -> list[str]:
        return [d for d in DTYPES if getattr(self.peak, d) is not None]
