"""Parameter counts of the *real* implementations, built on the meta device.

A spec names what it mirrors in ``reference`` (library, class, config). Where
that library is installed, build the real model from a hand-written config
(no hub downloads, no weights) under ``torch.device('meta')`` and count
``sum(p.numel() for p in model.parameters())`` (tied weights once):

* transformers: the config recorded for (name, class) in
  tests/data/reference_params.json (written by
  tests/data/make_reference_params.py), built as ``cls(cls.config_class(**cfg))``;
* torchvision: the constructor named in ``reference.config``
  (``torchvision.models.resnet50(num_classes=1000)``), parsed with ``ast``,
  never evaluated;
* torch.nn: the same, for ``nn.LSTM(...)``-style constructors; the tied
  ``nn.Transformer`` + embedding models reuse ``TiedSeq2SeqTransformer``
  from make_reference_params.py (present in a source checkout).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
from dataclasses import dataclass

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE_JSON = os.path.join(_REPO, "tests", "data", "reference_params.json")
MAKER = os.path.join(_REPO, "tests", "data", "make_reference_params.py")


@dataclass
class RefResult:
    model: str
    library: str
    cls: str
    params: int | None       # None: library not installed / not buildable here
    engine: int
    note: str = ""

    @property
    def ok(self) -> bool | None:
        return None if self.params is None else self.params == self.engine


def _entries() -> list[dict]:
    if not os.path.exists(REFERENCE_JSON):
        return []
    with open(REFERENCE_JSON) as f:
        return json.load(f)


def _parse_call(text: str):
    """'torchvision.models.resnet50(num_classes=1000)' -> ('torchvision.models.resnet50', (), {...}),
    literals only; None when the text is not such a call."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(node, ast.Call):
        return None
    parts = []
    f = node.func
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if not isinstance(f, ast.Name):
        return None
    parts.append(f.id)
    try:
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
        return None
    return ".".join(reversed(parts)), args, kwargs


def reference_params(spec) -> RefResult:
    """Build the spec's reference implementation on meta and count parameters."""
    import torch

    from ..engine import count_params
    ref = spec.reference
    engine = count_params(spec)
    if ref is None:
        return RefResult(spec.name, "", "", None, engine, "spec names no reference")
    lib = ref.library.split()[0]
    try:
        if lib == "transformers":
            import transformers as tf
            ent = next((e for e in _entries() if e["name"] == spec.name and e["class"] == ref.cls), None)
            if ent is None:
                return RefResult(spec.name, ref.library, ref.cls, None, engine,
                                 "no hand-written config in tests/data/reference_params.json")
            cls = getattr(tf, ref.cls)
            cfg = dict(ent["config"])
            kw = cfg.pop("__model_kwargs__", {})
            with torch.device("meta"):
                m = cls(cls.config_class(**cfg), **kw)
            return RefResult(spec.name, f"transformers {tf.__version__}", ref.cls,
                             sum(p.numel() for p in m.parameters()), engine)
        call = _parse_call(ref.config)
        if lib == "torchvision":
            import torchvision
            if call is None or not call[0].startswith("torchvision.models."):
                return RefResult(spec.name, ref.library, ref.cls, None, engine, "reference.config is not a constructor")
            fn = getattr(torchvision.models, call[0].rsplit(".", 1)[1])
            try:
                with torch.device("meta"):
                    m = fn(*call[1], **{"weights": None, **call[2]})
            except NotImplementedError:   # RegNet computes its widths with .tolist(): no meta tensors
                m = fn(*call[1], **{"weights": None, **call[2]})
            return RefResult(spec.name, f"torchvision {torchvision.__version__.split('+')[0]}", ref.cls,
                             sum(p.numel() for p in m.parameters()), engine)
        if lib == "torch":
            version = f"torch {torch.__version__.split('+')[0]}"
            if "Embedding" in ref.cls and call is not None and call[0] == "nn.Transformer" and os.path.exists(MAKER):
                # nn.Transformer + one nn.Embedding shared by source, target and output projection
                mk = _load_maker()
                with torch.device("meta"):
                    m = mk.TiedSeq2SeqTransformer(spec.vocab_size, *call[1], **call[2])
                return RefResult(spec.name, version, "nn.Transformer + tied nn.Embedding",
                                 sum(p.numel() for p in m.parameters()), engine)
            if call is not None and call[0].startswith("nn.") and hasattr(torch.nn, call[0][3:]):
                with torch.device("meta"):
                    m = getattr(torch.nn, call[0][3:])(*call[1], **call[2])
                return RefResult(spec.name, version, ref.cls, sum(p.numel() for p in m.parameters()), engine)
            return RefResult(spec.name, ref.library, ref.cls, None, engine,
                             "reference.config is not a constructor call (torch_build is the torch.nn module)")
    except ImportError as e:
        return RefResult(spec.name, ref.library, ref.cls, None, engine, f"not installed: {e.name}")
    return RefResult(spec.name, ref.library, ref.cls, None, engine, f"unknown library {lib!r}")


def _load_maker():
    s = importlib.util.spec_from_file_location("make_reference_params", MAKER)
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return mod
