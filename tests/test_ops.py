"""Op formulas against hand derivations (FLOPs = 2 per multiply-accumulate)."""
import glob
import os

import pytest

from costmodel.ops import Precision, conv_out, make

FP32 = Precision.of("fp32")
BF16 = Precision.of("bf16")


def test_linear_by_hand():
    # y = x W^T + b, x: 8 x 16, W: 32 x 16
    op = make("linear", "l", FP32, tokens=8, d_in=16, d_out=32, bias=True)
    assert op.matmul_flops == 2 * 8 * 16 * 32
    assert op.fwd_flops == 2 * 8 * 16 * 32 + 8 * 32            # + bias adds
    assert op.bwd_matmul_flops == 2 * op.matmul_flops          # dX and dW
    assert op.params == 16 * 32 + 32
    assert op.fwd_bytes == 4 * (8 * 16 + 16 * 32 + 8 * 32)     # read x, W; write y
    assert op.saved_bytes == 4 * 8 * 16                        # x, for dW


def test_linear_without_input_grad_has_single_backward_product():
    op = make("linear", "l", FP32, tokens=4, d_in=3, d_out=5, bias=False, input_grad=False)
    assert op.bwd_matmul_flops == op.matmul_flops == 2 * 4 * 3 * 5


def test_attention_products_by_hand():
    # QK^T for 2 sequences x 12 heads, n = 128, d_head = 64
    s = make("bmm", "scores", BF16, batch=24, m=128, k=64, n=128)
    assert s.matmul_flops == 2 * 24 * 128 * 64 * 128
    assert s.saved_bytes == 2 * (24 * 128 * 64 * 2)            # Q and K in bf16
    sm = make("softmax", "sm", BF16, rows=24 * 128, cols=128)
    assert sm.saved_bytes == 24 * 128 * 128 * 2                # its output
    d = make("dropout", "d", BF16, elements=24 * 128 * 128)
    assert d.saved_bytes == 24 * 128 * 128                     # 1-byte mask


def test_flash_attention_causal_halves_products_and_saves_no_square():
    full = make("flash_attention", "f", BF16, batch=1, heads=8, kv_heads=8, q_len=1024, kv_len=1024, d_head=64)
    causal = make("flash_attention", "f", BF16, batch=1, heads=8, kv_heads=8, q_len=1024, kv_len=1024, d_head=64,
                  causal=True)
    assert full.matmul_flops == 4 * 8 * 1024 * 1024 * 64
    assert causal.matmul_flops == full.matmul_flops / 2
    # saved: Q, K, V, O (4 x 8 x 1024 x 64 x 2 bytes) + fp32 logsumexp (8 x 1024 x 4)
    assert full.saved_bytes == 4 * 8 * 1024 * 64 * 2 + 8 * 1024 * 4


def test_conv2d_by_hand_resnet_stem():
    # torchvision resnet stem: 3->64, 7x7, stride 2, pad 3 on 224x224 -> 112x112
    op = make("conv2d", "c", FP32, n=1, c_in=3, h=224, w=224, c_out=64, kernel=7, stride=2, padding=3, bias=False,
              input_grad=False)
    assert (op.dims["h_out"], op.dims["w_out"]) == (112, 112)
    assert op.matmul_flops == 2 * 112 * 112 * 64 * 3 * 49 == 236_027_904
    assert op.params == 64 * 3 * 49
    assert op.bwd_matmul_flops == op.matmul_flops              # no grad for the image


def test_conv_out_matches_pytorch_formula():
    assert conv_out(224, 3, 1, 1) == 224
    assert conv_out(224, 2, 2, 0) == 112
    assert conv_out(7, 3, 2, 1) == 4
    assert conv_out(5, 7) == -1     # empty output is detected by conv2d


def test_empty_conv_output_raises():
    with pytest.raises(ValueError, match="empty"):
        make("conv2d", "c", FP32, n=1, c_in=3, h=4, w=4, c_out=8, kernel=7)


def test_lstm_params_match_torch_formula():
    # torch.nn.LSTM(512, 1024): 4*1024*(512+1024) + 2*4*1024
    op = make("rnn", "r", FP32, cell="lstm", batch=1, seq=1, d_in=512, hidden=1024)
    assert op.params == 4 * 1024 * (512 + 1024) + 2 * 4 * 1024
    assert op.matmul_flops == 2 * 4 * 1024 * (512 + 1024)


def test_norm_params_and_saved():
    ln = make("norm", "n", BF16, rows=10, dim=768, kind="layernorm")
    rms = make("norm", "n", BF16, rows=10, dim=768, kind="rmsnorm", bias=False)
    assert (ln.params, rms.params) == (2 * 768, 768)
    assert ln.saved_bytes == 10 * 768 * 2 + 2 * 10 * 4          # input + fp32 mean, rstd
    assert rms.saved_bytes == 10 * 768 * 2 + 10 * 4             # input + fp32 rstd


def test_every_op_states_its_formula():
    from costmodel.ops import REGISTRY
    for kind, fn in REGISTRY.items():
        assert fn.__doc__, kind
