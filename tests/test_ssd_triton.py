"""The Triton SSD kernels (run by Triton's interpreter on CPU) against the float64 recurrence."""

import pytest
import torch

from mambamixer.kernels import mamba_chunk_scan_combined, mamba_chunk_scan_ref
from mambamixer.kernels.ssd import triton_op
from mambamixer.mixer import ChannelWiseSelectiveMixer, CrossScanSSM, SelectiveSSM

from helpers import assert_backends_agree, grads, rel_err, ssd_inputs, with_grad

KEEP_FLOAT32 = {"A", "dt_bias", "D", "initial_states"}  # float32 whatever the inputs' dtype, as Mamba-2 keeps them


def as_dtype(args, dtype=torch.float32):
    return {k: v.to(torch.float32 if k in KEEP_FLOAT32 else dtype) if isinstance(v, torch.Tensor) else v
            for k, v in args.items()}


def check_against_reference(a, chunk_size, reverse, tol=2e-5):
    """Output, final state and every gradient of the Triton path (float32) against the float64 recurrence."""
    tri, ref = with_grad(as_dtype(a)), with_grad(a)
    out, last = mamba_chunk_scan_combined(**tri, chunk_size=chunk_size, reverse=reverse, return_final_states=True,
                                          backend="triton")
    ref_out, ref_last = mamba_chunk_scan_ref(**ref, reverse=reverse, return_final_states=True)
    assert out.dtype == torch.float32 and last.dtype == torch.float32 and not last.requires_grad
    assert rel_err(out, ref_out) < tol and rel_err(last, ref_last) < tol
    g_tri, g_ref = grads(out.double(), tri), grads(ref_out, ref)
    assert set(g_tri) == {k for k, v in a.items() if isinstance(v, torch.Tensor)}
    for name in g_tri:  # A's and dt_bias's gradients sum terms of both signs over every step: the largest errors
        assert rel_err(g_tri[name], g_ref[name]) < (3 * tol if name in ("A", "dt_bias") else tol), name


@pytest.mark.parametrize("length", [1, 7, 70])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_forward_and_gradients_match_recurrence(length, groups, reverse):
    """70 steps cross three of the kernels' 32-step chunks, the last part-filled."""
    a = ssd_inputs(length=length, groups=groups, d_per_channel=groups == 2, seed=length)
    check_against_reference(a, 16, reverse)


@pytest.mark.parametrize("chunk_size", [8, 32, 256])
def test_every_chunk_size(chunk_size):
    """Any chunk_size: the kernels scan in triton_op.CHUNK-step chunks whatever it says."""
    check_against_reference(ssd_inputs(length=150, heads=2, headdim=5, n=3, seed=chunk_size), chunk_size, False)


@pytest.mark.parametrize("reverse", [False, True])
def test_without_optional_arguments(reverse):
    check_against_reference(ssd_inputs(length=40, groups=2, full=False, seed=4), 16, reverse)


def test_head_and_state_sizes_past_one_block():
    """P = 20 and N = 18 pad to 32 lanes; three heads per group."""
    check_against_reference(ssd_inputs(batch=1, length=33, heads=6, headdim=20, groups=2, n=18, seed=5), 32, True)


@pytest.mark.parametrize("reverse", [False, True])
def test_non_contiguous_inputs(reverse):
    a = as_dtype(ssd_inputs(length=37, groups=2, seed=6))
    views = {k: v.transpose(1, 2).contiguous().transpose(1, 2) if k in ("x", "B", "C", "z") else v
             for k, v in a.items()}
    views["dt"] = torch.stack([a["dt"], torch.zeros_like(a["dt"])], dim=-1).flatten(-2)[..., ::2]
    assert not views["x"].is_contiguous() and not views["B"].is_contiguous() and not views["dt"].is_contiguous()
    torch.testing.assert_close(mamba_chunk_scan_combined(**views, chunk_size=16, reverse=reverse, backend="triton"),
                               mamba_chunk_scan_combined(**a, chunk_size=16, reverse=reverse, backend="torch"))


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 3e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("reverse", [False, True])
def test_low_precision_inputs(dtype, tol, reverse):
    """16-bit x, B, C, z: the kernels' products take 16-bit operands, as mamba_ssm's do (conftest makes the
    interpreter's bfloat16 arithmetic match the GPU's). Output, final state and every gradient against the
    float64 recurrence on the same rounded inputs."""
    a = as_dtype(ssd_inputs(length=100, heads=4, headdim=8, groups=2, n=16, seed=7), dtype)
    assert triton_op._config(a["x"], a["B"], a["C"], 32)["PRECISION"] == {torch.float16: "fp16"}.get(dtype, "bf16")
    tri = with_grad(a)
    ref = with_grad({k: v.double() if isinstance(v, torch.Tensor) else v for k, v in a.items()})
    out, last = mamba_chunk_scan_combined(**tri, chunk_size=32, reverse=reverse, return_final_states=True,
                                          backend="triton")
    ref_out, ref_last = mamba_chunk_scan_ref(**ref, reverse=reverse, return_final_states=True)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert rel_err(out, ref_out) < tol and rel_err(last, ref_last) < tol
    g_tri, g_ref = grads(out.double(), tri), grads(ref_out, ref)
    for name in g_ref:
        assert rel_err(g_tri[name], g_ref[name]) < tol, name


def test_ssd_layer_same_on_both_backends():
    torch.manual_seed(0)
    layer = SelectiveSSM(16, d_state=4, ssm="ssd", headdim=8, ngroups=2, bidirectional=True, chunk_size=16)
    assert_backends_agree(layer, torch.randn(2, 21, 16))


@pytest.mark.parametrize("cls", [CrossScanSSM, ChannelWiseSelectiveMixer])
def test_vim2_mixers_with_ssd_same_on_both_backends(cls):
    """ViM2's mixers with ssm="ssd" hand the op views of their (batch, channels, L) tensors: the kernels
    read them in place."""
    torch.manual_seed(0)
    kw = dict(headdim=8) if cls is CrossScanSSM else {}
    assert_backends_agree(cls(8, d_state=4, ssm="ssd", chunk_size=16, **kw), torch.randn(2, 3, 5, 8))


def test_no_states_saved_without_grad():
    a = as_dtype(ssd_inputs(length=40, seed=11))
    with torch.no_grad():
        out = mamba_chunk_scan_combined(**a, chunk_size=16, backend="triton")
    assert not out.requires_grad
    torch.testing.assert_close(out, mamba_chunk_scan_combined(**a, chunk_size=16, backend="torch"))
    step = torch.rand(2, 40, 4)
    _, states, _ = triton_op.ssd_fwd(a["x"], step, a["A"], a["B"], a["C"], None, None, 16, False, False)
    assert states.numel() == 0


@pytest.mark.slow
def test_ssd_custom_ops_pass_opcheck():
    """Schema, fake tensors and autograd registration of mambamixer::ssd_fwd / _bwd, with packed sequences."""
    a = with_grad(as_dtype(ssd_inputs(length=20, groups=2, seed=9)))
    seq = (torch.arange(20) < 7).int().expand(2, 20).contiguous()  # nondecreasing in reverse scan order
    args = (a["x"], a["dt"].detach().abs().requires_grad_(), a["A"], a["B"], a["C"], a["initial_states"], seq, 16,
            True, True)
    torch.library.opcheck(triton_op.ssd_fwd, args)
    y, states, _ = triton_op.ssd_fwd(*args)
    detached = [t.detach() for t in (torch.randn_like(y), *args[:5])]
    torch.library.opcheck(triton_op.ssd_bwd, (*detached, seq, states.detach(), True, 16, True))


def test_largest_heads_the_kernels_take():
    """P * N = 8192, the largest head the kernels take."""
    check_against_reference(ssd_inputs(batch=1, length=70, heads=1, headdim=64, n=128, seed=10), 64, False)


def test_heads_too_large_for_the_kernels():
    a = as_dtype(ssd_inputs(batch=1, length=3, heads=1, headdim=128, n=128, full=False))
    with pytest.raises(ValueError, match=r"x: the Triton kernels take P \* N up to 8192 .* got P=128, N=128"):
        mamba_chunk_scan_combined(**a, chunk_size=64, backend="triton")
    torch.testing.assert_close(mamba_chunk_scan_combined(**a, chunk_size=64),  # "auto" on CPU: the PyTorch path
                               mamba_chunk_scan_combined(**a, chunk_size=64, backend="torch"))
