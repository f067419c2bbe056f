"""Mamba-2 SSD scan: the chunked path and the one-step update against the float64 recurrence."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mambamixer.kernels import mamba_chunk_scan_combined, mamba_chunk_scan_ref, ssd_state_update
from mambamixer.kernels.selective_scan import selective_scan_ref

from helpers import grads, rel_err, ssd_inputs, with_grad

LENGTHS = [1, 7, 64, 257]


def test_reference_equals_s6_with_scalar_decay_per_head():
    """SSD is S6 with A shared by a head's channels: check the oracle against the S6 oracle."""
    a = ssd_inputs(length=19, heads=4, headdim=3, groups=2, n=5, full=False)
    batch, length, heads, p = a["x"].shape
    u = a["x"].permute(0, 2, 3, 1).reshape(batch, heads * p, length)
    delta = a["dt"].permute(0, 2, 1).repeat_interleave(p, dim=1)
    A = a["A"].repeat_interleave(p)[:, None].expand(heads * p, 5)
    B, C = a["B"].permute(0, 2, 3, 1), a["C"].permute(0, 2, 3, 1)
    expected = selective_scan_ref(u, delta, A, B, C).reshape(batch, heads, p, length).permute(0, 3, 1, 2)
    torch.testing.assert_close(mamba_chunk_scan_ref(**a), expected)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("chunk_size", [16, 64])
def test_forward_matches_recurrence(length, groups, reverse, full, chunk_size):
    a = ssd_inputs(length=length, groups=groups, full=full, d_per_channel=groups == 2, seed=length)
    out, last = mamba_chunk_scan_combined(**a, chunk_size=chunk_size, return_final_states=True, reverse=reverse,
                                          backend="torch")
    ref, ref_last = mamba_chunk_scan_ref(**a, return_final_states=True, reverse=reverse)
    assert out.dtype == torch.float64 and last.shape == (2, 4, 3, 5)
    assert rel_err(out, ref) < 1e-12
    assert rel_err(last, ref_last) < 1e-12


def test_dt_limit_clamps_after_softplus():
    a = ssd_inputs(length=33, groups=2, seed=2)
    out = mamba_chunk_scan_combined(**a, chunk_size=8, dt_limit=(0.3, 0.6))
    torch.testing.assert_close(out, mamba_chunk_scan_ref(**a, dt_limit=(0.3, 0.6)))
    clamped = F.softplus(a["dt"] + a["dt_bias"]).clamp(0.3, 0.6)
    a_exact = dict(a, dt=clamped, dt_bias=None, dt_softplus=False)
    torch.testing.assert_close(out, mamba_chunk_scan_ref(**a_exact))


@pytest.mark.parametrize("length", [1, 7, 64])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_match_recurrence(length, groups, reverse):
    a = ssd_inputs(length=length, groups=groups, d_per_channel=groups == 1, seed=length + 1)
    fast, ref = with_grad(a), with_grad(a)
    g_fast = grads(mamba_chunk_scan_combined(**fast, chunk_size=16, reverse=reverse, backend="torch"), fast)
    g_ref = grads(mamba_chunk_scan_ref(**ref, reverse=reverse), ref)
    assert set(g_fast) == {"x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states"}
    for name in g_fast:
        assert rel_err(g_fast[name], g_ref[name]) < 1e-10, name


@pytest.mark.parametrize("reverse", [False, True])
def test_non_contiguous_inputs(reverse):
    a = ssd_inputs(length=21, groups=2, seed=3)
    views = {k: v.transpose(1, 2).contiguous().transpose(1, 2) if isinstance(v, torch.Tensor) and v.dim() >= 3
             else v for k, v in a.items()}
    views["dt"] = torch.stack([a["dt"], torch.zeros_like(a["dt"])], dim=-1).flatten(-2)[..., ::2]
    assert not views["x"].is_contiguous() and not views["dt"].is_contiguous()
    out = mamba_chunk_scan_combined(**views, chunk_size=8, reverse=reverse)
    torch.testing.assert_close(out, mamba_chunk_scan_ref(**a, reverse=reverse))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 3e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("reverse", [False, True])
def test_low_precision_inputs(dtype, tol, reverse):
    """Inputs in `dtype` (A, dt_bias, D in float32, as Mamba-2 keeps them), against the float64 recurrence
    on the same rounded values."""
    keep = {"A", "dt_bias", "D", "initial_states"}
    a = {k: v.to(torch.float32 if k in keep else dtype) if isinstance(v, torch.Tensor) else v
         for k, v in ssd_inputs(length=100, heads=4, headdim=8, groups=2, n=16, seed=5).items()}
    out, last = mamba_chunk_scan_combined(**a, chunk_size=32, return_final_states=True, reverse=reverse)
    exact = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    ref, ref_last = mamba_chunk_scan_ref(**exact, return_final_states=True, reverse=reverse)
    assert out.dtype == dtype and last.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < tol
    assert rel_err(last, ref_last) < 1e-5


@pytest.mark.parametrize("groups", [1, 2])
def test_step_over_sequence_equals_full_op(groups):
    a = ssd_inputs(length=23, groups=groups, d_per_channel=groups == 2, seed=7)
    full, full_last = mamba_chunk_scan_combined(**a, chunk_size=8, return_final_states=True)
    state = a["initial_states"].clone()
    outs = [
        ssd_state_update(state, a["x"][:, t], a["dt"][:, t], a["A"], a["B"][:, t], a["C"][:, t], D=a["D"],
                         z=a["z"][:, t], dt_bias=a["dt_bias"], dt_softplus=True)
        for t in range(23)
    ]
    torch.testing.assert_close(torch.stack(outs, 1), full)
    torch.testing.assert_close(state, full_last)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), heads_per_group=st.integers(1, 3), groups=st.integers(1, 2),
       headdim=st.integers(1, 4), length=st.integers(1, 70), n=st.integers(1, 5), chunk_size=st.integers(1, 32),
       full=st.booleans(), reverse=st.booleans())
def test_any_shape_matches_recurrence(batch, heads_per_group, groups, headdim, length, n, chunk_size, full, reverse):
    a = ssd_inputs(batch=batch, length=length, heads=heads_per_group * groups, headdim=headdim, groups=groups, n=n,
                   full=full)
    out = mamba_chunk_scan_combined(**a, chunk_size=chunk_size, reverse=reverse)
    assert rel_err(out, mamba_chunk_scan_ref(**a, reverse=reverse)) < 1e-12
