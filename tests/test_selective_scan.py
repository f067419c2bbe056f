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


@pytest.mark.parametrize("length", [1, 2, 15, 16, 17, 257, 1000])
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_fast_path_matches_recurrence(length, groups, reverse):
    """Forward, last state and every gradient (the last state's included) at lengths that take every branch
    of the chunked scan: one step at a time, whole chunks, chunks and leftover steps, recursion."""
    a = s6_inputs(length=length, groups=groups, seed=length + 2)
    mine, ref = with_grad(a), with_grad(a)
    out, last = fast.selective_scan_fast(**mine, return_last_state=True, reverse=reverse)
    ref_out, ref_last = selective_scan_ref(**ref, return_last_state=True, reverse=reverse)
    assert out.shape == ref_out.shape and out.is_contiguous()
    assert rel_err(out, ref_out) < 1e-12 and rel_err(last, ref_last) < 1e-12
    weights = torch.randn_like(last)
    g_mine, g_ref = grads(out + (last * weights).sum(), mine), grads(ref_out + (ref_last * weights).sum(), ref)
    for name in g_ref:
        assert rel_err(g_mine[name], g_ref[name]) < 1e-10, name


@pytest.mark.parametrize("length", [1, 2, 3, 15, 16, 17, 31, 64, 333, 1000])
@pytest.mark.parametrize("backward", [False, True])
def test_scan_in_place_against_a_loop(length, backward):
    """`scan_` in both directions (chunks, leftover steps, recursion) against the recurrence step by step."""
    g = torch.Generator().manual_seed(length)
    decay = torch.rand(length, 2, 5, generator=g, dtype=torch.float64)
    drive = torch.randn(length, 2, 5, generator=g, dtype=torch.float64)
    expected = drive.clone()
    for t in (range(length - 2, -1, -1) if backward else range(1, length)):
        expected[t] += decay[t + 1 if backward else t] * expected[t + 1 if backward else t - 1]
    assert rel_err(fast.scan_(drive.clone(), decay, backward=backward), expected) < 1e-13


def test_fast_path_does_not_loop_over_every_step():
    """Forward and backward dispatch O(sqrt(L)) operations: 4x the steps, about 2x the operations."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls += 1
            return func(*args, **(kwargs or {}))

    calls = {}
    for length in (1024, 4096):
        a = with_grad(s6_inputs(batch=1, dim=2, n=2, length=length))
        with Count() as count:
            fast.selective_scan_fast(**a).sum().backward()
        calls[length] = count.calls
    assert calls[4096] < 2.5 * calls[1024] and calls[4096] < 4096, calls


def test_mixed_groups_for_B_and_C():
    a = s6_inputs(dim=8, length=11, groups=4)
    a["C"] = a["C"][:, :2].contiguous()
    torch.testing.assert_close(selective_scan_fn(**a), selective_scan_ref(**a))


@pytest.mark.parametrize("which", ["B", "C", "BC"])
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_time_invariant_B_or_C(which, groups, reverse):
    """A time-invariant B or C (dim, N), as mamba_ssm takes it: equal to the same values given per channel at
    every step (grouped (batch, dim, N, L)), forward, last state and gradients, in float64 and float32."""
    a = s6_inputs(length=37, groups=groups, seed=9)
    g = torch.Generator().manual_seed(1)
    for name in which:
        a[name] = torch.randn(4, 3, generator=g, dtype=torch.float64)
    expanded = {k: v[None, :, :, None].expand(2, -1, -1, 37) if k in which else v for k, v in a.items()}
    inv, exp = with_grad(a), with_grad(expanded)
    out, last = selective_scan_fn(**inv, return_last_state=True, reverse=reverse)
    ref, ref_last = selective_scan_ref(**exp, return_last_state=True, reverse=reverse)
    assert rel_err(out, ref) < 1e-12 and rel_err(last, ref_last) < 1e-12
    g_inv, g_exp = grads(out, inv), grads(ref, exp)
    for name in g_inv:  # the per-step copies' gradients sum to the time-invariant one's
        want = g_exp[name].sum((0, 3)) if name in which else g_exp[name]
        assert rel_err(g_inv[name], want) < 1e-12, name
    f32 = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    assert rel_err(selective_scan_fn(**f32, reverse=reverse), ref) < 1e-5


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
