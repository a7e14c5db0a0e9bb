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


class Calibration(_Strict):
    source: str
    date: str
    curves: dict[str, CalibrationCurve] = {}
    memory_eff: Optional[float] = Field(None, gt=0, le=1)
    launch_overhead_s: float = Field(0.0, ge=0)
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
