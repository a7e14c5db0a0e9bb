"""Closed forms added by the independent audit of chapters 1-6 (book lines 336-3742).

Each function is a general formula with its source; it is built on the op
library (costmodel/ops.py) so the engine's own accounting is what is checked.
"""
from __future__ import annotations

from ..ops import Precision, make

_FP32 = Precision.of("fp32")

# CvT (Wu et al. 2021, 'CvT: Introducing Convolutions to Vision Transformers',
# Table 2), exactly as transformers.CvtConfig() (microsoft/cvt-13) builds it:
# per stage (embed_dim, depth, heads, patch kernel, patch padding, cls_token)
_CVT = {
    "13": ((64, 1, 1, 7, 2, False), (192, 2, 3, 3, 1, False), (384, 10, 6, 3, 1, True)),
    "21": ((64, 1, 1, 7, 2, False), (192, 4, 3, 3, 1, False), (384, 16, 6, 3, 1, True)),
}


def cvt_param_count(variant="13", num_classes=1000, mlp_ratio=4):
    """Parameters of a Convolutional vision Transformer (CvT-13 / CvT-21; Wu et
    al. 2021, sec. 3 and Table 2) as transformers.CvtForImageClassification
    builds it: per stage a convolutional token embedding (Conv2d with bias +
    LayerNorm), then ``depth`` blocks of [LayerNorm; convolutional projection
    of q, k, v = depthwise 3x3 conv (no bias) + BatchNorm2d each; q/k/v/out
    Linear(C, C) with bias; LayerNorm; MLP C -> 4C -> C with biases]; a class
    token in the last stage; final LayerNorm and Linear(C, classes).
    CvT-13 with 1000 classes: 19,997,480 (transformers 5.24.0, CvtConfig())."""
    p = _FP32
    ops = []
    c_prev = 3
    for c, depth, _heads, k, pad, cls in _CVT[str(variant)]:
        ops.append(make("conv2d", "patch", p, n=1, c_in=c_prev, h=k, w=k, c_out=c, kernel=k, bias=True))
        ops.append(make("norm", "patch_ln", p, rows=1, dim=c))
        for _ in range(depth):
            ops.append(make("norm", "ln1", p, rows=1, dim=c))
            for _qkv in range(3):
                ops.append(make("conv2d", "dw", p, n=1, c_in=c, h=3, w=3, c_out=c, kernel=3, groups=c, bias=False))
                ops.append(make("batchnorm", "dw_bn", p, n=1, channels=c, hw=1))
            for _lin in range(4):
                ops.append(make("linear", "qkvo", p, tokens=1, d_in=c, d_out=c))
            ops.append(make("norm", "ln2", p, rows=1, dim=c))
            ops.append(make("linear", "fc1", p, tokens=1, d_in=c, d_out=mlp_ratio * c))
            ops.append(make("linear", "fc2", p, tokens=1, d_in=mlp_ratio * c, d_out=c))
        if cls:
            ops.append(make("param", "cls_token", p, shape=(1, 1, c)))
        c_prev = c
    ops.append(make("norm", "final_ln", p, rows=1, dim=c_prev))
    ops.append(make("linear", "classifier", p, tokens=1, d_in=c_prev, d_out=num_classes))
    return int(sum(o.params for o in ops))


FUNCTIONS = {
    "cvt_param_count": cvt_param_count,
}
