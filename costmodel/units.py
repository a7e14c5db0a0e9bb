"""Human formatting. Code and JSON use base units; people see prefixes with
the unit spelled out: GB = 1e9 bytes, GiB = 2^30 bytes."""
from __future__ import annotations

import math

_SI = [(1e24, "Y"), (1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
GB = 1e9
GiB = 2 ** 30


def si(x: float, unit: str, digits: int = 3) -> str:
    if x is None:
        return "-"
    if x == 0:
        return f"0 {unit}"
    if not math.isfinite(x):
        return f"{x} {unit}"
    a = abs(x)
    for f, pre in _SI:
        if a >= f:
            return f"{x / f:.{digits}g} {pre}{unit}"
    return f"{x:.{digits}g} {unit}"


def fmt_flops(x: float) -> str:
    return si(x, "FLOP")


def fmt_bytes(x: float, binary: bool = False) -> str:
    if x is None:
        return "-"
    if binary:
        for f, pre in ((2 ** 40, "TiB"), (2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
            if abs(x) >= f:
                return f"{x / f:.3g} {pre}"
        return f"{x:.0f} B"
    return si(x, "B")


def fmt_bytes_both(x: float) -> str:
    return f"{fmt_bytes(x)} ({fmt_bytes(x, True)})"


def fmt_params(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.3g} B params"
    if n >= 1e6:
        return f"{n / 1e6:.4g} M params"
    return f"{n:,.0f} params"


def fmt_time(s: float) -> str:
    if s is None:
        return "-"
    if s == 0:
        return "0 s"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    if s < 172800:
        return f"{s / 3600:.3g} h"
    return f"{s / 86400:.3g} days"


def fmt_rate(x: float, unit: str) -> str:
    return si(x, unit + "/s")
