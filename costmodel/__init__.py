"""costmodel: analytical FLOPs / memory / time / cost of deep-learning models.

    >>> from costmodel import estimate
    >>> r = estimate("bert-base", "a100-80gb", batch=8, seq=512)
    >>> r["params"], r["step_time_s"]
"""
from .catalog import load_hardware, load_model
from .engine import count_params, estimate
from .errors import CostModelError
from .workload import Workload

__all__ = ["estimate", "load_model", "load_hardware", "count_params", "Workload", "CostModelError"]
__version__ = "0.1.0"
