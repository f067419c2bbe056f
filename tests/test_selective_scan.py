"""Mamba-1 selective scan: the fast path and the one-step update against the float64 recurrence."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mambamixer.kernels import selective_scan_fn, selective_scan_ref, selective_state_update
from mambamixer.kernels.selective_scan import fast

from helpers import grads, rel_err, s6_inputs, with_grad

LENGTHS = [1, 7, 64, 257]


def test_reference_length_one_closed_form():
    """One step from a zero state: h = delta u B, y = delta u <B, C> + D u, gated by silu(z)."""
    a = s6_inputs(length=1, groups=2)
    out, last = selective_scan_ref(**a, return_last_state=True)
    dt = F.softplus(a["delta"] + a["delta_bias"][:, None])[..., 0]
    B = a["B"][..., 0].repeat_interleave(2, dim=1)
    C = a["C"][..., 0].repeat_interleave(2, dim=1)
    h = (dt * a["u"][..., 0])[..., None] * B
    y = ((h * C).sum(-1) + a["D"] * a["u"][..., 0]) * F.silu(a["z"][..., 0])
    torch.testing.assert_close(last, h)
    torch.testing.assert_close(out[..., 0], y)


def test_reference_reverse_is_flipped_forward():
    a = s6_inputs(length=9, groups=2)
    flipped = {k: v.flip(-1) if isinstance(v, torch.Tensor) and v.dim() >= 3 else v for k, v in a.items()}
    torch.testing.assert_close(selective_scan_ref(**a, reverse=True), selective_scan_ref(**flipped).flip(-1))


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("groups", [None, 1, 2])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("full", [False, True])
def test_forward_matches_recurrence(length, groups, reverse, full):
    a = s6_inputs(length=length, groups=groups, full=full, seed=length)
    out, last = selective_scan_fn(**a, return_last_state=True, reverse=reverse, backend="torch")
    ref, ref_last = selective_scan_ref(**a, return_last_state=True, reverse=reverse)
    assert out.dtype == torch.float64 and last.shape == (2, 4, 3)
    assert rel_err(out, ref) < 1e-12
    assert rel_err(last, ref_last) < 1e-12


@pytest.mark.parametrize("length", [1, 7, 64])
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_match_recurrence(length, groups, reverse):
    a = s6_inputs(length=length, groups=groups, seed=length + 1)
    fast, ref = with_grad(a), with_grad(a)
    g_fast = grads(selective_scan_fn(**fast, reverse=reverse, backend="torch"), fast)
    g_ref = grads(selective_scan_ref(**ref, reverse=reverse), ref)
    assert set(g_fast) == {"u", "delta", "A", "B", "C", "D", "z", "delta_bias"}
    for name in g_fast:
        assert rel_err(g_fast[name], g_ref[name]) < 1e-10, name


@pytest.mark.parametrize("length", [1, 2, 7, 257, 1000])
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_both_fast_paths_match_recurrence(length, groups, reverse, chunked):
    """The per-step loop and the chunked scan, each forced, forward and every gradient."""
    a = s6_inputs(length=length, groups=groups, seed=length + 2)
    mine, ref = with_grad(a), with_grad(a)
    out, last = fast.selective_scan_fast(**mine, return_last_state=True, reverse=reverse, chunked=chunked)
    ref_out, ref_last = selective_scan_ref(**ref, return_last_state=True, reverse=reverse)
    assert out.shape == ref_out.shape and out.is_contiguous()
    assert rel_err(out, ref_out) < 1e-12 and rel_err(last, ref_last) < 1e-12
    g_mine, g_ref = grads(out, mine), grads(ref_out, ref)
    for name in g_ref:
        assert rel_err(g_mine[name], g_ref[name]) < 1e-10, name


@pytest.mark.parametrize("length", [1, 3, 4, 31, 64, 333])
@pytest.mark.parametrize("work", [6, 40])
def test_linear_recurrence_at_every_chunking(length, work, monkeypatch):
    """Chunks of 2 to tens of steps, padded last chunks and several recursion levels, against a loop."""
    monkeypatch.setattr(fast, "CHUNK_WORK", 6 * work)
    g = torch.Generator().manual_seed(length)
    log_decay = -torch.rand(length, 2, work // 2, generator=g, dtype=torch.float64) * 3
    drive = torch.randn(length, 2, work // 2, generator=g, dtype=torch.float64)
    h, expected = torch.zeros_like(drive[0]), []
    for t in range(length):
        h = log_decay[t].exp() * h + drive[t]
        expected.append(h)
    assert rel_err(fast.linear_recurrence(log_decay, drive), torch.stack(expected)) < 1e-13


def test_chunked_only_below_the_work_threshold(monkeypatch):
    """Auto mode: chunked for small steps, the per-step loop for large ones."""
    calls = []
    monkeypatch.setattr(fast, "linear_recurrence", lambda *a: calls.append(a) or torch.zeros_like(a[1]))
    small = s6_inputs(dim=4, n=3, length=5)
    fast.selective_scan_fast(**small)
    assert len(calls) == 1
    large = s6_inputs(batch=8, dim=64, n=4, length=5)
    assert 8 * 64 * 4 >= fast.CHUNK_BELOW
    fast.selective_scan_fast(**large)
    assert len(calls) == 1


def test_mixed_groups_for_B_and_C():
    a = s6_inputs(dim=8, length=11, groups=4)
    a["C"] = a["C"][:, :2].contiguous()
    torch.testing.assert_close(selective_scan_fn(**a), selective_scan_ref(**a))


@pytest.mark.parametrize("reverse", [False, True])
def test_non_contiguous_inputs(reverse):
    a = s6_inputs(length=13, groups=2, seed=3)
    # Same values through transposed / strided views.
    views = {k: v.transpose(-1, -2).contiguous().transpose(-1, -2) if isinstance(v, torch.Tensor) and v.dim() >= 2
             else v for k, v in a.items()}
    views["u"] = torch.stack([a["u"], torch.zeros_like(a["u"])], dim=-1).flatten(-2)[..., ::2]
    assert not views["u"].is_contiguous() and not views["B"].is_contiguous()
    torch.testing.assert_close(selective_scan_fn(**views, reverse=reverse), selective_scan_ref(**a, reverse=reverse))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 3e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("reverse", [False, True])
def test_low_precision_inputs(dtype, tol, reverse):
    """Inputs in `dtype` (A in float32, as mamba_ssm takes it), compared with the float64 recurrence on
    the same (rounded) values.

    The state stays in float32; the error bound is the output's rounding to `dtype` plus float32 drift.
    """
    a = {k: v.to(torch.float32 if k == "A" else dtype) if isinstance(v, torch.Tensor) else v
         for k, v in s6_inputs(dim=16, length=64, n=8, groups=2, seed=5).items()}
    out, last = selective_scan_fn(**a, return_last_state=True, reverse=reverse)
    exact = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    ref, ref_last = selective_scan_ref(**exact, return_last_state=True, reverse=reverse)
    assert out.dtype == dtype and last.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < tol
    assert rel_err(last, ref_last) < 1e-5


@pytest.mark.parametrize("groups", [None, 2])
def test_step_over_sequence_equals_full_op(groups):
    a = s6_inputs(length=23, groups=groups, seed=7)
    full, full_last = selective_scan_fn(**a, return_last_state=True)
    state = torch.zeros(2, 4, 3, dtype=torch.float64)
    outs = [
        selective_state_update(state, a["u"][..., t], a["delta"][..., t], a["A"], a["B"][..., t], a["C"][..., t],
                               D=a["D"], z=a["z"][..., t], dt_bias=a["delta_bias"], dt_softplus=True)
        for t in range(23)
    ]
    torch.testing.assert_close(torch.stack(outs, -1), full)
    torch.testing.assert_close(state, full_last)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), dim_per_group=st.integers(1, 3), groups=st.sampled_from([None, 1, 2]),
       length=st.integers(1, 40), n=st.integers(1, 5), full=st.booleans(), reverse=st.booleans())
def test_any_shape_matches_recurrence(batch, dim_per_group, groups, length, n, full, reverse):
    dim = dim_per_group * (groups or 1)
    a = s6_inputs(batch=batch, dim=dim, length=length, n=n, groups=groups, full=full)
    assert rel_err(selective_scan_fn(**a, reverse=reverse), selective_scan_ref(**a, reverse=reverse)) < 1e-12
