"""The Triton S6 kernels (run by Triton's interpreter on CPU) against the float64 recurrence."""

import pytest
import torch
import torch.nn.functional as F

from mambamixer.kernels import selective_scan_bidirectional_fn, selective_scan_fn, selective_scan_ref
from mambamixer.kernels._backend import next_power_of_2
from mambamixer.kernels.selective_scan import triton_op
from mambamixer.mixer import SelectiveSSM

from helpers import (
    OPCHECK_UTILS,
    assert_backends_agree,
    computing,
    grads,
    rel_err,
    s6_host,
    s6_inputs,
    token_major,
    with_grad,
)

NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")
SCAN_LAYOUT = ("u", "delta", "B", "C", "z")  # the (batch, ..., L) arguments


def as_float(args, dtype=torch.float32):
    """The arguments in `dtype` (A stays float32, as mamba_ssm takes it)."""
    return {k: v.to(torch.float32 if k == "A" else dtype) if isinstance(v, torch.Tensor) else v
            for k, v in args.items()}


def check_against_reference(a, tol=1e-5, **kw):
    """Forward, last state and every gradient of the Triton path against the float64 recurrence."""
    tri, ref = with_grad(as_float(a)), with_grad(a)
    out, last = selective_scan_fn(**tri, return_last_state=True, backend="triton", **kw)
    ref_out, ref_last = selective_scan_ref(**ref, return_last_state=True, **kw)
    assert out.dtype == torch.float32 and last.dtype == torch.float32
    assert rel_err(out, ref_out) < tol and rel_err(last, ref_last) < tol
    g_tri, g_ref = grads(out.double(), tri), grads(ref_out, ref)
    for name in g_tri:
        scale = g_ref[name].norm()
        err = rel_err(g_tri[name], g_ref[name]) if scale > 0 else g_tri[name].norm().item()  # dA at L = 1 is 0
        assert err < tol, name


@pytest.fixture
def small_blocks(monkeypatch):
    """Two channels per program and a state saved every 8 steps: odd channel counts leave a part-filled
    program and a 129-step scan crosses 17 chunks in the backward."""
    monkeypatch.setattr(triton_op, "block_sizes", lambda dim, length, n, dpgs: (2, next_power_of_2(n), 8, 1))


@pytest.mark.parametrize("length", [1, 7, pytest.param(129, marks=pytest.mark.slow)])
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_forward_and_gradients_match_recurrence(length, groups, reverse):
    check_against_reference(s6_inputs(length=length, groups=groups, seed=length), reverse=reverse)


@pytest.mark.slow
@pytest.mark.parametrize("reverse", [False, True])
def test_many_chunks_and_part_filled_programs(small_blocks, reverse):
    check_against_reference(s6_inputs(dim=5, n=5, length=129, seed=3), reverse=reverse)


@pytest.fixture
def segments_of(monkeypatch, small_blocks):
    """cut(steps): every scan cut into segments of `steps` steps (a multiple of the 8-step chunks), one
    program each, as `triton_op.segments` does on a GPU with few programs per segment."""
    def cut(steps):
        monkeypatch.setattr(triton_op, "segments", lambda programs, length, chunk, device: (-(-length // steps), steps))
    return cut


@pytest.mark.parametrize("length,steps,groups,reverse", [(33, 8, None, False), (33, 8, 3, True), (37, 16, 3, False),
                                                         (16, 8, None, True)])
def test_scan_split_into_segments(segments_of, length, steps, groups, reverse):
    """Segments scanned in parallel: each starts from the state folded from the earlier segments' end
    states, and its backward from the adjoint folded from the later ones. A 1-step last segment (33 = 4 x 8
    + 1), a part-filled last chunk (37), and an exact multiple (16)."""
    segments_of(steps)
    check_against_reference(s6_inputs(dim=6, n=5, length=length, groups=groups, seed=length), reverse=reverse)


def test_scan_split_into_segments_without_optional_arguments(segments_of):
    segments_of(8)
    check_against_reference(s6_inputs(length=29, full=False, seed=19))


@pytest.fixture
def tiled(monkeypatch):
    """use(steps): every forward the tiled kernel can take goes to it, in tiles of `steps` steps; the kernel's
    launches are counted in the returned list."""
    launches = []

    def use(steps):
        kernel = triton_op.s6_fwd_tiled_kernel
        monkeypatch.setattr(triton_op, "tiled_min_length", lambda device: 1)
        monkeypatch.setattr(triton_op, "tiled_block", lambda length, chunk: (steps, 1))
        counted = type("Counted", (), {"__getitem__": lambda self, grid: launches.append(grid) or kernel[grid]})
        monkeypatch.setattr(triton_op, "s6_fwd_tiled_kernel", counted())
        return launches
    return use


@pytest.mark.parametrize("length,steps,groups,chunk_8", [(37, 32, None, False), (16, 32, 2, False),
                                                         (1, 32, None, False), (41, 16, 3, True), (32, 16, None, True),
                                                         (50, 8, 3, True)])
def test_tiled_forward_matches_recurrence(request, tiled, length, steps, groups, chunk_8):
    """L scanned a tile at a time, each state's tile one associative scan from the state the tile enters with:
    tiles that end past L, one tile, one step, several tiles per saved state (chunk 8, tiles of 16) and one
    saved state per tile (8); the backward runs from the states it saves."""
    if chunk_8:
        request.getfixturevalue("small_blocks")
    launches = tiled(steps)
    check_against_reference(s6_inputs(dim=6, n=5, length=length, groups=groups, seed=length))
    assert len(launches) == 1


def test_tiled_forward_without_optional_arguments(tiled):
    launches = tiled(32)
    check_against_reference(s6_inputs(length=33, full=False, seed=4))
    assert len(launches) == 1


def test_tiled_forward_takes_long_channel_major_single_scans_first_to_last(monkeypatch):
    """The launcher's choice: one direction scanned first to last, in row order, u and delta channel-major, at
    least `tiled_min_length` steps; on CUDA only."""
    monkeypatch.setattr(triton_op, "tiled_min_length", lambda device: 8)
    a = s6_inputs(length=8)

    def directions(u, delta, pair=False):
        rest = (u, delta, a["A"], a["B"], a["C"], None, None) if pair else (None,) * 7
        return triton_op._directions(u, delta, a["A"], a["B"], a["C"], None, None, *rest)

    assert triton_op._tiled(directions(a["u"], a["delta"]), False, 0)
    assert not triton_op._tiled(directions(a["u"], a["delta"]), True, 0)
    assert not triton_op._tiled(directions(a["u"], a["delta"]), False, 2)
    assert not triton_op._tiled(directions(a["u"], a["delta"], pair=True), False, 0)
    assert not triton_op._tiled(directions(token_major(a["u"]), a["delta"]), False, 0)
    assert not triton_op._tiled(directions(a["u"][..., :7], a["delta"][..., :7]), False, 0)
    monkeypatch.undo()
    assert triton_op.tiled_min_length(torch.device("cpu")) is None
    assert triton_op.tiled_min_length(torch.device("cuda", 0)) == triton_op.TILED_MIN_LENGTH


@pytest.mark.parametrize("programs,length", [(384, 4096), (96, 16384), (768, 197), (8192, 21), (1, 129), (8, 4096)])
def test_segments_fill_the_gpu_and_cover_the_scan(monkeypatch, programs, length):
    """On a GPU of 132 SMs: split only with fewer programs than SMs, then about PROGRAMS_PER_SM programs per
    SM, at least MIN_SEGMENT_CHUNKS chunks per segment, every segment non-empty; no split off CUDA."""
    monkeypatch.setattr(triton_op, "_sm_count", lambda index: 132)
    chunk = triton_op.CHUNK
    n_segs, seg_len = triton_op.segments(programs, length, chunk, torch.device("cuda", 0))
    assert seg_len % chunk == 0 and (n_segs - 1) * seg_len < length <= n_segs * seg_len
    assert n_segs == 1 or seg_len >= chunk * triton_op.MIN_SEGMENT_CHUNKS
    assert programs * (n_segs - 1) < 132 * triton_op.PROGRAMS_PER_SM
    assert (n_segs > 1) == (programs < 132 and length >= 2 * chunk * triton_op.MIN_SEGMENT_CHUNKS)
    assert triton_op.segments(programs, length, chunk, torch.device("cpu")) == (1, -(-length // chunk) * chunk)


@pytest.mark.slow
@pytest.mark.parametrize("reverse", [False, True])
def test_batch_split_across_launches(monkeypatch, reverse):
    """Batches past the grid's 65535 rows, or whose backward scratch would exceed the budget, run as
    slices of rows, one launch each: here 2 rows per forward launch and 1 per backward launch."""
    monkeypatch.setattr(triton_op, "MAX_GRID_Y", 2)
    monkeypatch.setattr(triton_op, "SCRATCH_FLOATS", 1)
    check_against_reference(s6_inputs(batch=3, length=37, groups=2, seed=12), reverse=reverse)


def test_batch_split_keeps_offsets_within_32_bits(monkeypatch):
    """B as a view of a wide projection spans more than its elements: rows are launched so that no offset
    from a slice's base passes the limit (here 3 rows of 600-element strides under a 1000 limit)."""
    monkeypatch.setattr(triton_op, "MAX_OFFSET", 1000)
    a = s6_inputs(batch=3, length=37, n=3, seed=13)
    f = as_float(a)
    wide = torch.zeros(3, 37, 16)  # (batch, L, 16): B is a (batch, N, L) view of it, 592 elements per row
    wide[..., :3] = f["B"].transpose(1, 2)
    f["B"] = wide[..., :3].transpose(1, 2)
    assert triton_op._rows_for_32bit([f["u"], f["B"]]) == 1
    assert rel_err(selective_scan_fn(**f, backend="triton"), selective_scan_ref(**a)) < 1e-5
    monkeypatch.setattr(triton_op, "MAX_OFFSET", 100)
    with pytest.raises(ValueError, match="one batch row of the scan's inputs spans"):
        selective_scan_fn(**f, backend="triton")


def test_without_optional_arguments():
    check_against_reference(s6_inputs(length=33, full=False, seed=4))


def test_mixed_groups_for_B_and_C(small_blocks):
    a = s6_inputs(dim=8, length=11, groups=4, seed=5)
    a["C"] = a["C"][:, :2].contiguous()
    check_against_reference(a)


def test_non_contiguous_inputs():
    """B and C as the layer makes them: (batch, N, L) views of a (batch, L, N) projection."""
    a = as_float(s6_inputs(length=13, seed=6))
    views = {k: v.transpose(-1, -2).contiguous().transpose(-1, -2) if k in ("u", "delta", "B", "C", "z") else v
             for k, v in a.items()}
    assert not views["B"].is_contiguous()
    torch.testing.assert_close(selective_scan_fn(**views, backend="triton"), selective_scan_fn(**a, backend="torch"))


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 3e-3), (torch.bfloat16, 1e-2)])
def test_low_precision_inputs(dtype, tol):
    a = as_float(s6_inputs(dim=8, length=40, n=8, groups=2, seed=7), dtype)
    out = selective_scan_fn(**a, backend="triton")
    ref = selective_scan_ref(**{k: v.double() if isinstance(v, torch.Tensor) else v for k, v in a.items()})
    assert out.dtype == dtype and torch.isfinite(out).all() and rel_err(out, ref) < tol


@pytest.mark.parametrize("length,split,segments", [(1, False, None), (30, False, None), (30, True, None),
                                                    (30, False, 8)])
def test_fused_bidirectional_matches_two_scans(request, monkeypatch, length, split, segments):
    """The pair in one launch; split: one batch row per launch; segments: cut into 8-step segments, one
    launch per direction (the second adds its output to the first's)."""
    if split:
        monkeypatch.setattr(triton_op, "MAX_GRID_Y", 1)
    if segments:
        request.getfixturevalue("segments_of")(segments)
    f, b = s6_inputs(length=length, groups=2, seed=8), s6_inputs(length=length, seed=9)
    z = f.pop("z")
    b.pop("z")
    leaves = with_grad({**{k + "0": v for k, v in f.items()}, **{k + "1": v for k, v in b.items()}, "z": z})
    ref = (selective_scan_ref(**{k: leaves[k + "0"] for k in f}) * 1
           + selective_scan_ref(**{k: leaves[k + "1"] for k in b}, reverse=True)) * F.silu(leaves["z"])
    tri = with_grad(as_float(leaves))
    out = selective_scan_bidirectional_fn(*[(tri[k + "0"], tri[k + "1"]) for k in NAMES], z=tri["z"],
                                          delta_softplus=True, backend="triton")
    assert rel_err(out, ref) < 1e-5
    g_tri, g_ref = grads(out.double(), tri), grads(ref, leaves)
    for name in g_tri:
        scale = g_ref[name].norm()
        assert (rel_err(g_tri[name], g_ref[name]) if scale > 0 else g_tri[name].norm().item()) < 1e-5, name


def low_rank(a, rank=2, seed=30):
    """`a` with delta given low-rank: delta (batch, rank, L) and delta_proj_weight (dim, rank), float64."""
    g = torch.Generator().manual_seed(seed)
    batch, dim, length = a["u"].shape
    low = torch.randn(batch, rank, length, generator=g, dtype=torch.float64)
    return {**a, "delta": low, "delta_proj_weight": torch.randn(dim, rank, generator=g, dtype=torch.float64) / 2}


@pytest.mark.parametrize("layout", ["channels", "tokens"])
@pytest.mark.parametrize("pair", [False, True])
def test_low_rank_delta_matches_its_full_delta(layout, pair):
    """delta given low-rank with its projection weight, formed in the op and again in the backward, against
    the float64 recurrence on the full delta: output and every gradient, the weight's included, for one
    direction and the fused pair; and the op saves no (batch, dim, L) delta for the backward."""
    a = low_rank(s6_inputs(dim=5, length=11, groups=None, seed=31))
    b = low_rank(s6_inputs(dim=5, length=11, groups=None, seed=32), seed=33)
    z = a.pop("z")
    b.pop("z")
    if layout == "tokens":
        a, b = ({k: token_major(v) if k in SCAN_LAYOUT else v for k, v in d.items()} for d in (a, b))
        z = token_major(z)
    names = (*NAMES, "delta_proj_weight")
    leaves = with_grad({**{k + "0": a[k] for k in names}, **{k + "1": b[k] for k in names}, "z": z})

    def full(i):
        d = {k: leaves[k + str(i)] for k in NAMES}
        return {**d, "delta": torch.einsum("dr,brl->bdl", leaves[f"delta_proj_weight{i}"], d["delta"])}

    ref = selective_scan_ref(**full(0), delta_softplus=True)
    if pair:
        ref = ref + selective_scan_ref(**full(1), delta_softplus=True, reverse=True)
    ref = ref * F.silu(leaves["z"])
    tri = with_grad(as_float(leaves))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        if pair:
            out = selective_scan_bidirectional_fn(*[(tri[k + "0"], tri[k + "1"]) for k in NAMES], z=tri["z"],
                                                  delta_softplus=True, backend="triton",
                                                  delta_proj_weight=(tri["delta_proj_weight0"],
                                                                     tri["delta_proj_weight1"]))
        else:
            out = selective_scan_fn(**{k: tri[k + "0"] for k in names}, z=tri["z"], delta_softplus=True,
                                    backend="triton")
    used = [k for k in tri if pair or k.endswith("0") or k == "z"]
    tri = {k: tri[k] for k in used}
    assert rel_err(out, ref) < 1e-5
    assert saved.count(a["u"].shape) == 2 + pair  # u, z (and u_rev): no full delta
    g_tri, g_ref = grads(out.double(), tri), grads(ref, {k: leaves[k] for k in used})
    for name in g_tri:
        assert rel_err(g_tri[name], g_ref[name]) < 1e-5, name
        assert g_tri[name].stride() == tri[name].stride() or name.startswith("delta_proj"), name


def test_low_rank_delta_is_checked():
    a = low_rank(as_float(s6_inputs(dim=4, length=6, seed=34)))
    with pytest.raises(ValueError, match=r"delta: expected shape \(batch, rank, L\)"):
        selective_scan_fn(**{**a, "delta": a["delta"][:, :1]}, backend="triton")
    with pytest.raises(ValueError, match=r"delta_proj_weight: expected shape \(dim, rank\)"):
        selective_scan_fn(**{**a, "delta_proj_weight": a["delta_proj_weight"][:3]}, backend="triton")
    pair = [(v, v) for v in (a[k] for k in NAMES)]
    with pytest.raises(ValueError, match="delta_proj_weight: give it for both directions or for neither"):
        selective_scan_bidirectional_fn(*pair, delta_proj_weight=(a["delta_proj_weight"], None), backend="triton")


def test_bidirectional_layer_same_on_both_backends():
    torch.manual_seed(0)
    assert_backends_agree(SelectiveSSM(8, d_state=4, bidirectional=True, causal=False), torch.randn(2, 9, 8))


@pytest.mark.slow
def test_torch_compile_traces_the_custom_op():
    """fullgraph: dynamo and AOT autograd go through mambamixer::selective_scan_fwd / _bwd without a break."""
    a = with_grad(as_float(s6_inputs(length=9, seed=10)))
    compiled = torch.compile(lambda **k: selective_scan_fn(**k, backend="triton"), backend="aot_eager",
                             fullgraph=True)
    out = compiled(**a)
    ref = selective_scan_fn(**a, backend="torch")
    torch.testing.assert_close(out, ref)
    for g, g_ref in zip(grads(out, a).values(), grads(ref, a).values()):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)


def test_no_states_saved_without_grad():
    a = as_float(s6_inputs(length=9, seed=11))
    with torch.no_grad():
        out = selective_scan_fn(**a, backend="triton")
    assert not out.requires_grad
    torch.testing.assert_close(out, selective_scan_fn(**a, backend="torch"))


def test_too_large_for_32_bit_offsets_is_named():
    """Checked before any launch (meta tensors: no memory): one row's backward scratch is too large."""
    batch, dim, length, n = 2, 2**22, 2**5, 16
    meta = dict(device="meta")
    args = dict(u=torch.empty(batch, dim, length, **meta), delta=torch.empty(batch, dim, length, **meta),
                A=torch.empty(dim, n, **meta), B=torch.empty(batch, n, length, **meta),
                C=torch.empty(batch, n, length, **meta))
    with pytest.raises(ValueError, match=r"u: the Triton kernels take dim \* 32 \* \(N \+ 1\) below 2\*\*31"):
        selective_scan_fn(**args, backend="triton")


@pytest.mark.parametrize("groups", [None, 3])
@pytest.mark.parametrize("reverse", [False, True])
def test_token_major_inputs_give_token_major_output_and_gradients(small_blocks, groups, reverse):
    """Inputs stored (batch, L, dim): the kernels read them in place and write the output, du, ddelta, dz,
    dB and dC in that layout, with the values of the contiguous case."""
    a = s6_inputs(dim=6, n=5, length=29, groups=groups, seed=14)
    tri = with_grad({k: token_major(v) if k in SCAN_LAYOUT else v for k, v in as_float(a).items()})
    out = selective_scan_fn(**tri, reverse=reverse, backend="triton")
    leaves = with_grad(a)
    ref = selective_scan_ref(**leaves, reverse=reverse)
    assert out.stride(1) == 1 and rel_err(out, ref) < 1e-5
    g_tri, g_ref = grads(out.double(), tri), grads(ref, leaves)
    for name in g_tri:
        assert rel_err(g_tri[name], g_ref[name]) < 1e-5, name
        if name in SCAN_LAYOUT:
            assert g_tri[name].stride(-2) == 1, name


def columns(t, height):
    """t (..., L) for L = height * W positions of a row-major grid, reordered down the columns."""
    return t.unflatten(-1, (height, -1)).transpose(-1, -2).flatten(-2)


@pytest.mark.parametrize("height,width", [(3, 5), (1, 6), (6, 1), (4, 4)])
@pytest.mark.parametrize("layout", ["channels", "tokens"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_column_order_scans_the_grid_down_its_columns(small_blocks, height, width, layout, backend):
    """column_grid_height=H: the same as scanning the grid's transpose and transposing the output back,
    forward and every gradient, with no copy on the Triton backend."""
    check_column_order(height, width, layout, backend)


@pytest.mark.slow
def test_column_order_split_into_segments(segments_of):
    """Token-major inputs scanned down the columns of a 5 x 7 grid in 8-step segments."""
    segments_of(8)
    check_column_order(5, 7, "tokens", "triton")


def check_column_order(height, width, layout, backend):
    length = height * width
    f, b = s6_inputs(dim=6, length=length, groups=3, seed=15), s6_inputs(dim=6, length=length, seed=16)
    z = f.pop("z")
    b.pop("z")
    leaves = with_grad({**{k + "0": v for k, v in f.items()}, **{k + "1": v for k, v in b.items()}, "z": z})

    def cols(name):
        t = leaves[name]
        return columns(t, height) if name.rstrip("01") in SCAN_LAYOUT else t

    ref = (selective_scan_ref(**{k: cols(k + "0") for k in f})
           + selective_scan_ref(**{k: cols(k + "1") for k in b}, reverse=True)) * F.silu(cols("z"))
    ref = ref.unflatten(-1, (width, height)).transpose(-1, -2).flatten(-2)  # back to row-major positions
    tri = as_float(leaves)
    if layout == "tokens":
        tri = {k: token_major(v) if k.rstrip("01") in SCAN_LAYOUT else v for k, v in tri.items()}
    tri = with_grad(tri)
    out = selective_scan_bidirectional_fn(*[(tri[k + "0"], tri[k + "1"]) for k in NAMES], z=tri["z"],
                                          delta_softplus=True, column_grid_height=height, backend=backend)
    assert rel_err(out, ref) < 1e-5
    g_tri, g_ref = grads(out.double(), tri), grads(ref, leaves)
    for name in g_tri:
        assert rel_err(g_tri[name], g_ref[name]) < 1e-5, name


@pytest.mark.slow
@pytest.mark.parametrize("layout,cols", [("channels", 0), ("tokens", 3)])
def test_scan_custom_ops_pass_opcheck(layout, cols):
    """Schema, fake tensors (shapes and the layout-following strides) and autograd registration of
    mambamixer::selective_scan_fwd / _bwd, fused pair: each layout once, one in row and one in column
    order (the fake tensors do not depend on the order), the second with low-rank deltas. The AOT-dispatch
    check, which does not depend on the layout and takes most of the time under the interpreter, runs on the
    first layout only."""
    utils = OPCHECK_UTILS if layout == "channels" else OPCHECK_UTILS[:3]
    pair = [as_float(s6_inputs(length=12, seed=seed)) for seed in (17, 18)]
    weights = (None, None)
    if layout == "tokens":  # and delta low-rank, its full delta formed in the ops
        pair = [{k: token_major(v) if k in SCAN_LAYOUT else v for k, v in as_float(low_rank(d, seed=i)).items()}
                for i, d in enumerate(pair)]
        weights = tuple(d.pop("delta_proj_weight").requires_grad_(True) for d in pair)
    pair = [with_grad(d) for d in pair]
    tensors = (*[d[k] for d in pair for k in NAMES], pair[0]["z"], *weights)
    torch.library.opcheck(triton_op.selective_scan_fwd, (*tensors, True, False, True, cols), test_utils=utils)
    out, _, states, states_rev = triton_op.selective_scan_fwd(*tensors, True, False, True, cols)
    dout = torch.randn_like(out)  # no double backward: the backward op's inputs do not require grad
    detached = [t if t is None else t.detach() for t in (dout, states, states_rev, *tensors)]
    torch.library.opcheck(triton_op.selective_scan_bwd, (*detached, True, False, cols), test_utils=utils)


@pytest.mark.parametrize("pair", [False, True])
def test_A_in_either_layout_gives_the_same_scan_and_dA_in_its_layout(pair):
    """A with its channels adjacent (as the layers store it, read as it is) and row-major A (copied into that
    layout per call) give the same output and gradients to the bit, near the float64 recurrence, and dA comes
    back in A's own layout, so autograd copies nothing into the leaf's."""
    a = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in s6_inputs(dim=8, length=9, n=4).items()}
    pairs = dict(u=(a["u"], a["u"].flip(-1)), delta=(a["delta"], a["delta"]), B=(a["B"], a["C"]), C=(a["C"], a["B"]),
                 D=(a["D"], a["D"]), delta_bias=(a["delta_bias"], a["delta_bias"]))
    results = []
    for A in (a["A"], a["A"].t().contiguous().t()):
        if pair:
            args = with_grad({**{k: v[0] for k, v in pairs.items()}, "A": A, "z": a["z"]})
            rev = with_grad({k: v[1] for k, v in pairs.items()} | {"A": A})
            out = selective_scan_bidirectional_fn(*((args[k], rev[k]) for k in NAMES), z=args["z"],
                                                  delta_softplus=True, backend="triton")
            args = {**args, **{k + "_rev": v for k, v in rev.items()}}
        else:
            args = with_grad({**a, "A": A})
            out = selective_scan_fn(**args, backend="triton")
        g = grads(out, args)
        assert g["A"].stride() == args["A"].stride() and (not pair or g["A_rev"].stride() == A.stride())
        results.append((out, g))
    (out0, g0), (out1, g1) = results
    assert torch.equal(out0, out1) and all(torch.equal(g0[k], g1[k]) for k in g0)
    if not pair:
        ref = selective_scan_ref(**{k: v.double() if isinstance(v, torch.Tensor) else v for k, v in a.items()})
        assert rel_err(out1.double(), ref) < 1e-5


def test_eager_call_computes_little_besides_the_kernels(monkeypatch):
    """An eager forward computes nothing in torch beside the kernels, and a forward+backward only the sums of
    dA, dD and d(delta_bias), the casts of bf16 dB and dC and one zero fill (no zero gradients for the
    non-differentiable outputs). A stored with its channels adjacent, as the layers keep it, is not copied;
    another A is, once per call, into that layout. The launches are skipped: the interpreter's copies would
    count."""
    host = s6_host()
    host.skip_launches(monkeypatch.setattr)
    a = {k: v.to(torch.float32 if k in ("A", "D", "delta_bias") else torch.bfloat16)
         if isinstance(v, torch.Tensor) else v for k, v in s6_inputs(length=16).items()}
    with torch.no_grad(), host.OperatorCount() as forward:
        selective_scan_fn(**a, backend="triton")
    assert computing(forward.counts) == {"clone": 1}
    a = with_grad({**a, "A": a["A"].t().contiguous().t()})
    with torch.no_grad(), host.OperatorCount() as forward:
        selective_scan_fn(**a, backend="triton")
    assert computing(forward.counts) == {}
    out = selective_scan_fn(**a, backend="triton")
    dout = torch.ones_like(out)
    with host.OperatorCount() as backward:
        out.backward(dout)
    assert computing(backward.counts) == {"_to_copy": 2, "sum": 3, "zeros": 1}
