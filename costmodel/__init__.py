"""costmodel: analytical FLOPs / memory / time / cost of deep-learning models.

    >>> from costmodel import estimate
    >>> r = estimate("bert-base", "a100-80gb", batch=8, seq=512)
    >>> r["params"], r["step_time_s"]

Names are imported lazily so that `costmodel --help` stays fast.
"""
__all__ = ["estimate", "load_model", "load_hardware", "count_params", "Workload", "CostModelError"]
__version__ = "0.1.0"

_WHERE = {"estimate": "engine", "count_params": "engine", "load_model": "catalog", "load_hardware": "catalog",
          "Workload": "workload", "CostModelError": "errors"}


def __getattr__(name):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(name)
