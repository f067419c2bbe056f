"""The one-step state update (decoding), both forms, on the PyTorch path and the Triton kernel (interpreter),
against the float64 recurrence; 16-bit states updated in place in their own dtype."""

import pytest
import torch

from mambamixer.kernels import selective_scan_ref, selective_state_update, ssd_state_update

from helpers import rel_err

BACKENDS = ["torch", "triton"]


def heads_inputs(batch=2, heads=4, headdim=3, n=5, groups=2, seed=0):
    """Float64 arguments of the multi-head form (without the state), a sequence of 9 steps on the last axis."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return dict(x=randn(batch, heads, headdim, 9), dt=0.5 * randn(batch, heads, headdim, 9),
                A=-(0.5 + torch.rand(heads, headdim, n, generator=g, dtype=torch.float64)),
                B=randn(batch, groups, n, 9), C=randn(batch, groups, n, 9), D=randn(heads, headdim),
                z=randn(batch, heads, headdim, 9), dt_bias=0.5 * randn(heads, headdim))


def at(a, t, dtype=torch.float32):
    """Step t of the sequence arguments, every tensor in `dtype`."""
    return {k: (v[..., t] if v.dim() >= 3 and k != "A" else v).to(dtype) for k, v in a.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_heads_form_over_sequence_equals_recurrence(backend):
    """Running the multi-head update over 9 steps equals the Mamba-1 scan over H * P channels, B/C in groups."""
    a = heads_inputs()
    batch, heads, p, _ = a["x"].shape
    n = a["A"].shape[-1]
    state = torch.zeros(batch, heads, p, n)
    outs = [selective_state_update(state, **at(a, t), dt_softplus=True, backend=backend) for t in range(9)]
    flat = dict(u=a["x"].flatten(1, 2), delta=a["dt"].flatten(1, 2), A=a["A"].flatten(0, 1), B=a["B"], C=a["C"],
                D=a["D"].flatten(), z=a["z"].flatten(1, 2), delta_bias=a["dt_bias"].flatten())
    ref, ref_last = selective_scan_ref(**flat, delta_softplus=True, return_last_state=True)
    assert rel_err(torch.stack(outs, -1).flatten(1, 2), ref) < 1e-6
    assert rel_err(state.flatten(1, 2), ref_last) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_state_is_updated_in_its_dtype(backend, dtype):
    """The new state is the float64 update of the stored one, rounded once to the state's dtype; the output
    comes from the unrounded state, accurate to float32."""
    a = at(heads_inputs(seed=3), 0, torch.float64)
    state = torch.randn(2, 4, 3, 5, dtype=torch.float64).to(dtype)
    exact = state.double()
    ref = selective_state_update(exact, **a, dt_softplus=True, backend="torch")
    out = selective_state_update(state, **{k: v.float() for k, v in a.items()}, dt_softplus=True, backend=backend)
    assert state.dtype == dtype
    assert (state.double() - exact).abs().le(torch.finfo(dtype).eps * exact.abs() + 1e-6).all()  # one rounding
    assert rel_err(out, ref) < 1e-6


def test_tied_parameters_are_read_in_place():
    """Mamba-2's form: dt, dt_bias and A tied over the head's channels by stride 0 give the untied result."""
    a = at(heads_inputs(seed=5), 0)
    heads, p, n = a["A"].shape
    tied = dict(a, dt=a["dt"][..., :1].expand(-1, -1, p), dt_bias=a["dt_bias"][:, :1].expand(heads, p),
                A=a["A"][:, :1, :1].expand(heads, p, n))
    untied = {k: v.contiguous() for k, v in tied.items()}
    outs, states = [], []
    for args, backend in ((tied, "triton"), (untied, "torch")):
        state = torch.ones(2, heads, p, n)
        outs.append(selective_state_update(state, **args, dt_softplus=True, backend=backend))
        states.append(state)
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(states[0], states[1])


@pytest.mark.parametrize("groups", [None, 2])
def test_channels_form_on_the_kernel_equals_torch(groups):
    """Mamba-1's form (state (batch, dim, N), B/C shared or grouped) on the kernel, a state that is a
    non-contiguous view."""
    g = torch.Generator().manual_seed(groups or 0)
    dim, n = 6, 4
    bc = (2, n) if groups is None else (2, groups, n)
    args = dict(x=torch.randn(2, dim, generator=g), dt=torch.randn(2, dim, generator=g),
                A=-torch.rand(dim, n, generator=g),
                B=torch.randn(*bc, generator=g), C=torch.randn(*bc, generator=g), D=torch.randn(dim, generator=g),
                z=torch.randn(2, dim, generator=g), dt_bias=torch.randn(dim, generator=g))
    base = torch.randn(2, n, dim, generator=g)
    states = [base.clone().transpose(1, 2) for _ in BACKENDS]
    outs = [selective_state_update(s, **args, dt_softplus=True, backend=b) for s, b in zip(states, BACKENDS)]
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(states[0], states[1])
    assert outs[1].shape == (2, dim)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ssd_update_with_16bit_state_and_dt_limit(backend):
    """The SSD step (scalar A and dt per head) through the same kernel: a bfloat16 state, dt clamped."""
    g = torch.Generator().manual_seed(11)
    x, dt, z = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, generator=g), torch.randn(2, 4, 3, generator=g)
    A, bias, D = -torch.rand(4, generator=g), torch.randn(4, generator=g), torch.randn(4, generator=g)
    B, C = torch.randn(2, 2, 5, generator=g), torch.randn(2, 2, 5, generator=g)
    state = torch.randn(2, 4, 3, 5, generator=g).bfloat16()
    exact = state.double()
    kw = dict(D=D, z=z, dt_bias=bias, dt_softplus=True, dt_limit=(0.1, 0.5))
    ref = ssd_state_update(exact, x.double(), dt.double(), A.double(), B.double(), C.double(),
                           **{k: v.double() if isinstance(v, torch.Tensor) else v for k, v in kw.items()})
    out = ssd_state_update(state, x, dt, A, B, C, **kw, backend=backend)
    assert state.dtype == torch.bfloat16
    assert rel_err(state, exact.to(torch.bfloat16)) < 1e-2 and rel_err(out, ref) < 1e-6


def test_errors_name_the_argument():
    state = torch.zeros(2, 4, 3, 5)
    a = at(heads_inputs(heads=4, headdim=3, n=5, groups=2), 0)
    with pytest.raises(ValueError, match=r"state: expected shape \(batch, dim, N\) or \(batch, H, P, N\), got \(2, 4"):
        selective_state_update(torch.zeros(2, 4), **a)
    with pytest.raises(ValueError, match=r"state: expected a real floating dtype"):
        selective_state_update(state.int(), **a)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, H, P\) = \(2, 4, 3\)"):
        selective_state_update(state, **dict(a, x=a["x"][:, :3]))
    with pytest.raises(ValueError, match=r"A: expected shape \(H, P, N\) = \(4, 3, 5\)"):
        selective_state_update(state, **dict(a, A=a["A"][..., 0]))
    with pytest.raises(ValueError, match=r"C: the number of groups \(3\) must divide H \(4\)"):
        selective_state_update(state, **dict(a, C=torch.zeros(2, 3, 5)))
    with pytest.raises(ValueError, match=r"backend: 'triton' takes float32, float16 or bfloat16"):
        selective_state_update(state.double(), **a, backend="triton")
