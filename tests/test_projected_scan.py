"""The S6 pair with delta/B/C projected from u (ViM2's channel mixer), with and without the conv before the
scans: the PyTorch path against the float64 recurrence, the Triton kernels' PROJ mode (interpreted on CPU)
against it with every gradient, bad input."""

import pytest
import torch
import torch.nn.functional as F

from mambamixer.kernels import selective_scan_projected_bidirectional_fn, selective_scan_ref
from mambamixer.kernels.selective_scan import triton_op

from helpers import OPCHECK_UTILS, computing, rel_err, s6_host, token_major

NAMES = ("u", "A", "x_weight", "dt_weight", "dt_bias", "D")
CONV = ("conv_weight", "conv_bias")


def inputs(batch=2, groups=3, e=2, n=3, length=7, seed=0, dtype=torch.float64, taps=0):
    """Pairs (forward, backward) of the op's arguments and z, float64 leaves; with `taps` each direction has
    a conv of that many taps (the same u for both, as the channel mixer passes it)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).requires_grad_(True)

    def direction():
        d = dict(u=r(batch, groups * e, length), A=(-(0.5 + torch.rand(e, n, generator=g, dtype=torch.float64)))
                 .to(dtype).requires_grad_(True), x_weight=r(1 + 2 * n, e, scale=0.7), dt_weight=r(e),
                 dt_bias=r(e, scale=0.5), D=r(e))
        if taps:
            d.update(conv_weight=r(e, taps, scale=0.5), conv_bias=r(e, scale=0.3))
        return d

    fwd, bwd = direction(), direction()
    if taps:
        bwd["u"] = fwd["u"]
    return fwd, bwd, r(batch, groups * e, length)


def call(fwd, bwd, z, **kw):
    conv = {k: (fwd[k], bwd[k]) for k in CONV if k in fwd}
    return selective_scan_projected_bidirectional_fn(*[(fwd[k], bwd[k]) for k in NAMES], z=z, **conv, **kw)


def convolved(d, reverse):
    """u through the direction's conv (nn.functional.conv1d, causal along its scan order) and SiLU."""
    u = d["u"]
    if "conv_weight" not in d:
        return u
    batch, dim, length = u.shape
    e, taps = d["conv_weight"].shape
    x = u.reshape(batch * dim // e, e, length)
    x = F.pad(x, (0, taps - 1) if reverse else (taps - 1, 0))
    y = F.conv1d(x, d["conv_weight"][:, None], d["conv_bias"], groups=e)
    return F.silu(y).reshape(batch, dim, length)


def by_recurrence(fwd, bwd, z):
    """Per token and step, delta/B/C from the token's e values, then the float64 recurrence each way."""
    ys = []
    for d, reverse in ((fwd, False), (bwd, True)):
        batch, dim, length = d["u"].shape
        e, n = d["A"].shape
        u = convolved(d, reverse)
        v = u.reshape(batch, dim // e, e, length)
        W = d["x_weight"]
        r = (W[0][None, None, :, None] * v).sum(2)  # (batch, groups, L)
        B = torch.stack([(W[1 + k][None, None, :, None] * v).sum(2) for k in range(n)], 2)
        C = torch.stack([(W[1 + n + k][None, None, :, None] * v).sum(2) for k in range(n)], 2)
        delta = (d["dt_weight"][None, None, :, None] * r[:, :, None]).reshape(batch, dim, length)
        reps = dim // e
        ys.append(selective_scan_ref(u, delta, d["A"].repeat(reps, 1), B, C, d["D"].repeat(reps), None,
                                     d["dt_bias"].repeat(reps), delta_softplus=True, reverse=reverse))
    return (ys[0] + ys[1]) * F.silu(z)


def named_leaves(fwd, bwd):
    """(name, tensor) of every distinct input of the pair (a u both directions share counted once)."""
    seen = []
    for d, which in ((fwd, "fwd"), (bwd, "bwd")):
        for k in (*NAMES, *CONV):
            if k in d and not any(d[k] is t for _, t in seen):
                seen.append((f"{k}[{which}]", d[k]))
    return seen


def leaves(fwd, bwd, z):
    return [t for _, t in named_leaves(fwd, bwd)] + [z]


def as_layout(t, layout):
    """A detached float32 leaf of t (batch, X, L): contiguous, or with layout "tokens" stored as (batch, L, X),
    as the channel mixer passes u and z (each channel step's tokens adjacent)."""
    t = t.detach().float()
    return (token_major(t) if layout == "tokens" else t).requires_grad_(True)


def float32(fwd, bwd, layout="channels"):
    """Detached float32 leaves of the pair, sharing u where the float64 pair does; u in `layout`."""
    f32 = [{k: as_layout(v, layout) if k == "u" else v.detach().float().requires_grad_(True) for k, v in d.items()}
           for d in (fwd, bwd)]
    if bwd["u"] is fwd["u"]:
        f32[1]["u"] = f32[0]["u"]
    return f32


@pytest.mark.parametrize("length", [1, 7, 40])
@pytest.mark.parametrize("e", [1, 2, 3])
def test_torch_path_matches_recurrence(length, e):
    fwd, bwd, z = inputs(e=e, length=length, seed=length + e)
    assert rel_err(call(fwd, bwd, z, backend="torch"), by_recurrence(fwd, bwd, z)) < 1e-12


def check_kernels_with_every_gradient(fwd, bwd, z, layout="channels"):
    """The Triton path in float32 against the float64 recurrence: output and every input's gradient (those
    of the weights are float32 sums over every token and step, hence 2e-5). u and z in `layout`; the output
    takes u's."""
    ref = by_recurrence(fwd, bwd, z)
    f32 = float32(fwd, bwd, layout)
    z32 = as_layout(z, layout)
    out = call(*f32, z32, backend="triton")
    assert out.dtype == torch.float32 and rel_err(out, ref) < 1e-5
    assert out.stride() == f32[0]["u"].stride()
    dout = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g_ref = torch.autograd.grad(ref, leaves(fwd, bwd, z), dout)
    g_out = torch.autograd.grad(out, leaves(*f32, z32), dout.float())
    names = [name for name, _ in named_leaves(fwd, bwd)] + ["z"]
    for name, mine, exact in zip(names, g_out, g_ref):
        err = rel_err(mine, exact) if exact.norm() > 0 else mine.norm().item()  # dA at L = 1 is 0
        assert err < 2e-5, name


@pytest.mark.parametrize("length,e,n", [(1, 2, 3), (7, 1, 3), (7, 4, 16), *(pytest.param(*c, marks=pytest.mark.slow)
                                                                     for c in [(40, 2, 3), (40, 4, 5), (7, 3, 3)])])
def test_kernels_match_recurrence_with_every_gradient(length, e, n):
    """PROJ mode as the launcher configures it (40 steps cross two saved-state chunks); e = 3, not a power of
    two, takes the explicit delta/B/C through the generic kernels."""
    check_kernels_with_every_gradient(*inputs(e=e, n=n, length=length, seed=length + 10 * e))


@pytest.mark.parametrize("length,e,taps", [(1, 2, 4), (3, 2, 4), (7, 1, 2), (9, 2, 1), *(
    pytest.param(*c, marks=pytest.mark.slow) for c in [(40, 2, 4), (70, 4, 3), (9, 2, 5)])])
def test_kernels_with_conv_match_recurrence_with_every_gradient(length, e, taps):
    """The conv and SiLU before each direction's scan, computed in the kernels: lengths shorter than the conv,
    one step, several saved-state chunks (the conv's window reloaded at each chunk start), 1 to 4 taps; 5 taps
    take the explicit path."""
    check_kernels_with_every_gradient(*inputs(e=e, n=5, length=length, seed=length + taps, taps=taps))


@pytest.mark.parametrize("length,e,taps", [(1, 2, 4), *(pytest.param(*c, marks=pytest.mark.slow)
                                                     for c in [(40, 2, 4), (33, 4, 3)])])
def test_kernels_on_token_major_inputs(length, e, taps):
    """u and z stored (batch, L, groups * e), as `ChannelWiseSelectiveMixer` passes them (each step's loads
    and stores one contiguous run): same values and gradients, output in that layout."""
    check_kernels_with_every_gradient(*inputs(e=e, length=length, seed=length + e + taps, taps=taps), layout="tokens")


@pytest.mark.parametrize("length,e", [(1, 2), (9, 3), (40, 2)])
def test_torch_path_with_conv_matches_recurrence(length, e):
    fwd, bwd, z = inputs(e=e, length=length, seed=length, taps=4)
    assert rel_err(call(fwd, bwd, z, backend="torch"), by_recurrence(fwd, bwd, z)) < 1e-12


@pytest.mark.parametrize("per_program,e,groups", [(16, 4, 3), *(pytest.param(*c, marks=pytest.mark.slow)
                                                          for c in [(1, 2, 5), (2, 2, 11)])])
def test_kernels_with_any_groups_per_program(monkeypatch, per_program, e, groups):
    """Programs owning one or several groups (each summing B, C and delta over its own e rows; the last
    program partly filled), across three saved-state chunks."""
    monkeypatch.setattr(triton_op, "PROJ_GROUPS", per_program)
    monkeypatch.setattr(triton_op, "CHUNK", 8)
    check_kernels_with_every_gradient(*inputs(e=e, n=5, groups=groups, length=20, seed=3 * groups))


def test_kernels_across_launch_slices(monkeypatch):
    """One batch row per launch and per backward launch."""
    monkeypatch.setattr(triton_op, "MAX_GRID_Y", 1)
    monkeypatch.setattr(triton_op, "SCRATCH_FLOATS", 1)
    fwd, bwd, z = inputs(batch=3, length=9, seed=5)
    f32 = float32(fwd, bwd)
    out = call(*f32, z.detach().float(), backend="triton")
    assert rel_err(out, by_recurrence(fwd, bwd, z)) < 1e-5
    out.sum().backward()
    ref_grad = torch.autograd.grad(by_recurrence(fwd, bwd, z).sum(), fwd["x_weight"])[0]
    assert rel_err(f32[0]["x_weight"].grad, ref_grad) < 1e-5


def test_kernels_in_bfloat16():
    fwd, bwd, z = inputs(e=2, n=8, groups=4, length=33, seed=6)
    low = [{k: v.detach().to(torch.float32 if k != "u" else torch.bfloat16) for k, v in d.items()}
           for d in (fwd, bwd)]
    out = call(*low, z.detach().bfloat16(), backend="triton")
    exact = [{k: v.double() for k, v in d.items()} for d in low]
    assert out.dtype == torch.bfloat16 and rel_err(out, by_recurrence(*exact, z.detach().bfloat16().double())) < 1e-2


@pytest.mark.parametrize("name,value,message", [
    ("u", torch.zeros(2, 5, 7), "u: expected .* e=2"),
    ("A", torch.zeros(2), r"A: expected shape \(e, N\)"),
    ("x_weight", torch.zeros(6, 2), r"x_weight: expected shape \(1 \+ 2N, e\) = \(7, 2\)"),
    ("dt_weight", torch.zeros(3), r"dt_weight: expected shape \(e,\) = \(2\)"),
    ("D", torch.zeros(2, 1), r"D: expected shape \(e,\)"),
])
def test_bad_input_names_the_argument(name, value, message):
    fwd, bwd, z = inputs()
    bwd = {**bwd, name: value}
    with pytest.raises(ValueError, match="backward direction: " + message):
        call(fwd, bwd, z, backend="torch")
    with pytest.raises(ValueError, match=r"z: expected shape"):
        call(fwd, inputs()[1], z[:, :, :3], backend="torch")
    with pytest.raises(ValueError, match="expected a pair"):
        selective_scan_projected_bidirectional_fn(fwd["u"], *[(fwd[k], fwd[k]) for k in NAMES[1:]], z=z)


@pytest.mark.parametrize("conv,message", [
    (dict(conv_weight=(torch.zeros(3, 4), torch.zeros(3, 4))),
     r"forward direction: conv_weight: expected shape \(e, K\)"),
    (dict(conv_weight=(torch.zeros(2, 0), torch.zeros(2, 0))), "conv_weight: expected at least one tap"),
    (dict(conv_weight=(torch.zeros(2, 4), None)), "conv_weight: expected a conv in both directions or in neither"),
    (dict(conv_bias=(torch.zeros(2), torch.zeros(2))), "conv_bias: given without conv_weight"),
    (dict(conv_weight=(torch.zeros(2, 4), torch.zeros(2, 4)), conv_bias=(torch.zeros(2), torch.zeros(3))),
     r"backward direction: conv_bias: expected shape \(e,\)"),
])
def test_bad_conv_names_the_argument(conv, message):
    fwd, bwd, z = inputs()
    with pytest.raises(ValueError, match=message):
        call(fwd, bwd, z, backend="torch", **{k: tuple(t if t is None else t.double() for t in v)
                                               for k, v in conv.items()})


@pytest.mark.slow
def test_kernels_under_torch_compile():
    """torch.compile traces the Triton path's custom ops in one graph (with the conv, as the channel mixer
    calls it); same values and gradients."""
    fwd, bwd, z = inputs(length=9, seed=8, taps=4)
    f32 = float32(fwd, bwd)
    compiled = torch.compile(lambda a, b, zz: call(a, b, zz, backend="triton"), backend="aot_eager", fullgraph=True)
    z32 = z.detach().float().requires_grad_(True)
    out = compiled(*f32, z32)
    ref = by_recurrence(fwd, bwd, z)
    assert rel_err(out, ref) < 1e-5
    dout = torch.randn(ref.shape, dtype=torch.float64)
    g_ref = torch.autograd.grad(ref, leaves(fwd, bwd, z), dout)
    g_out = torch.autograd.grad(out, leaves(*f32, z32), dout.float())
    for mine, exact in zip(g_out, g_ref):
        assert rel_err(mine, exact) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("taps,layout", [(0, "channels"), (4, "tokens")])
def test_custom_ops_pass_opcheck(taps, layout):
    """Schema, fake (meta) shapes and strides (following u's layout) and autograd registration of the
    projected scan's custom ops, without and with the conv; the AOT-dispatch check on the first case only
    (it does not depend on the layout and takes most of the time under the interpreter)."""
    utils = OPCHECK_UTILS if layout == "channels" else OPCHECK_UTILS[:3]
    fwd, bwd, z = inputs(length=5, seed=9, taps=taps)
    f32 = float32(fwd, bwd, layout)
    order = ("u", "A", "x_weight", "dt_weight", "D", "dt_bias")
    conv = [d.get(k) for d in f32 for k in CONV]
    args = (as_layout(z, layout), *[d[k] for d in f32 for k in order], *conv)
    torch.library.opcheck(triton_op.selective_scan_projected_fwd, (*args, True), test_utils=utils)
    out, states, states_rev = triton_op.selective_scan_projected_fwd(*args, True)
    dout = torch.randn_like(out)  # no double backward: the backward op's inputs do not require grad
    torch.library.opcheck(triton_op.selective_scan_projected_bwd,
                          [None if t is None else t.detach() for t in (dout, states, states_rev, *args)],
                          test_utils=utils)


def test_eager_backward_sums_each_weight_gradient_once(monkeypatch):
    """Without a conv, the eager backward computes in torch only the five per-weight sums of each direction
    (A, x_weight, dt_weight, D, dt_bias over the batch and the groups), each one reduction straight into its
    layout; the forward computes nothing beside the kernels (A stored with its channels adjacent, as the layers
    keep it: no copy). The launches are skipped."""
    host = s6_host()
    host.skip_launches(monkeypatch.setattr)
    fwd, bwd, z = inputs(dtype=torch.float32)
    for d in (fwd, bwd):
        d["A"] = d["A"].detach().t().contiguous().t().requires_grad_(True)
    with torch.no_grad(), host.OperatorCount() as forward:
        call(fwd, bwd, z, backend="triton")
    assert computing(forward.counts) == {}
    out = call(fwd, bwd, z, backend="triton")
    dout = torch.ones_like(out)
    with host.OperatorCount() as backward:
        out.backward(dout)
    assert computing(backward.counts) == {"sum": 10}
