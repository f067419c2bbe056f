"""Launchers, torch custom ops (`mambamixer::selective_scan_fwd` / `_bwd`) and autograd around the Triton S6
kernels.

One launch covers one direction or the fused pair of directions (when the second direction's tensors are
given); the forward of one long channel-major direction scanned first to last runs the tiled kernel of
`triton_tiled` instead (`_tiled`). Under `torch.compile` the scan goes through the custom ops (their autograd
formula calls the backward op), so the compiler traces through it; in eager mode a plain autograd Function
calls the same launchers without the custom-op dispatch.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

from .._backend import cdiv, launch_device, next_power_of_2
from .low_rank import full_delta, low_rank_grads
from .triton_args import Direction, Gradients, GroupedSeq, Projection, Seq, Sizes, StateMatrix
from .triton_kernels import s6_bwd_kernel, s6_fwd_kernel, s6_segment_adjoints_kernel, s6_segment_states_kernel
from .triton_tiled import s6_fwd_tiled_kernel, tiled_block

# Steps between the states the forward saves for the backward, which recomputes the states of one chunk at
# a time into its scratch (both modes; picked from the H100 sweeps recorded in BENCHMARKS.md).
CHUNK = 32

# Registers per thread the backward of the plain and paired scans may use (ptxas's maxnreg), None: the compiler's
# choice, about 226, which fits 8 one-warp programs per SM. On an H100 (`bench/s6_launch_sweep.py`, BENCHMARKS.md)
# 200 changed nothing and 168 helped only where it fit a launch into one wave, so none is set. The PROJ backward
# needs all 255 and is never capped.
BWD_MAX_REGISTERS = None


def block_sizes(dim: int, length: int, n: int, dpgs: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(BLOCK_D, BLOCK_N, CHUNK, num_warps) for a scan of `dim` channels, `length` steps and N = `n`.

    BLOCK_D must divide every channels-per-group count of a grouped B or C (`dpgs`), so one program's
    channels share their B and C rows. CHUNK: steps between the states saved for the backward.
    """
    block_d = 32
    for dpg in dpgs:
        block_d = math.gcd(block_d, dpg & -dpg)
    block_n = next_power_of_2(n)
    return block_d, block_n, CHUNK, 1  # picked from the H100 sweep recorded in BENCHMARKS.md


class ScanDirection(NamedTuple):
    """One direction's inputs over the whole batch: u, delta (batch, dim, L); A (dim, N); B, C (batch, N, L) or
    grouped (batch, G, N, L); D, delta_bias (dim,) or None. With `proj` (the PROJ mode's `Projection`) delta, B
    and C are None and A, D and delta_bias have one row per place in a group of E channels."""

    u: torch.Tensor
    delta: torch.Tensor | None
    A: torch.Tensor
    B: torch.Tensor | None
    C: torch.Tensor | None
    D: torch.Tensor | None
    delta_bias: torch.Tensor | None
    proj: Projection | None = None

    def kernel_args(self, rows: slice | None, states: torch.Tensor, summaries: torch.Tensor) -> Direction:
        """The kernels' `Direction` for the batch rows `rows` (None: all), with the (full-batch) states and
        summaries."""
        dim = self.u.shape[1]
        # A with its channels adjacent, as the kernels hold the state (N, channels): read through other strides,
        # Triton lays the loaded tile out differently and converts it in the loops (12 % slower forward on an
        # H100). The layers store A_log that way, so -exp(A_log) needs no copy here.
        A = self.A if self.A.stride(0) == 1 else self.A.t().contiguous().t()

        def grouped(t):  # B or C as (batch, G, N, L)
            return None if t is None else GroupedSeq.of(_rows(t, rows), dim)

        return Direction(Seq.of(_rows(self.u, rows)), None if self.delta is None else Seq.of(_rows(self.delta, rows)),
                         StateMatrix(A, *A.stride()), grouped(self.B), grouped(self.C), self.D, self.delta_bias,
                         self.proj, _rows(states, rows), _rows(summaries, rows))


def _directions(u, delta, A, B, C, D, delta_bias, u_rev, delta_rev, A_rev, B_rev, C_rev, D_rev, delta_bias_rev):
    """The ops' flat arguments as one `ScanDirection`, or two for a pair (u_rev given)."""
    directions = [ScanDirection(u, delta, A, B, C, D, delta_bias)]
    if u_rev is not None:
        directions.append(ScanDirection(u_rev, delta_rev, A_rev, B_rev, C_rev, D_rev, delta_bias_rev))
    return directions


# Splitting the scan order into segments (one program each, see `segments`) happens only when the programs
# are fewer than the SMs, aims then at PROGRAMS_PER_SM programs per SM, and keeps at least MIN_SEGMENT_CHUNKS
# chunks per segment. Measured on the H200 (BENCHMARKS.md): 96 programs at L = 16384 run 2.8x faster in 11
# segments; 384 programs at L = 4096 run slower in any split (the extra summary pass costs more than the
# added programs gain).
PROGRAMS_PER_SM = 8
MIN_SEGMENT_CHUNKS = 4


@functools.lru_cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def segments(programs: int, length: int, chunk: int, device: torch.device) -> tuple[int, int]:
    """(n_segs, seg_len): the scan order cut into n_segs segments of seg_len steps (a multiple of chunk), so
    that `programs` programs per segment fill the GPU, when they are fewer than its SMs. Each segment's
    program starts from the state folded from the earlier segments' summaries (a short scan of each from a
    zero state), and the backward likewise from the later segments' adjoints. One segment off CUDA."""
    chunks = cdiv(length, chunk)
    split = 1
    if device.type == "cuda" and programs < _sm_count(device.index or 0):
        want = cdiv(_sm_count(device.index or 0) * PROGRAMS_PER_SM, programs)
        split = max(1, min(want, chunks // MIN_SEGMENT_CHUNKS))
    per = cdiv(chunks, split)
    return cdiv(chunks, per), per * chunk


# Forward scans of one direction, first to last, at least this long and channel-major (u and delta with unit
# stride along L) go to the tiled kernel (`triton_tiled`), on CUDA: on an H100 (BENCHMARKS.md) it halves the
# forward at L = 1024 to 16384, while the step kernels are faster at the 197-token shapes.
TILED_MIN_LENGTH = 1024


def tiled_min_length(device: torch.device) -> int | None:
    """The shortest scan the tiled forward takes on `device`; None: never (off CUDA, where the interpreter's
    scan runs element by element)."""
    return TILED_MIN_LENGTH if device.type == "cuda" else None


def _tiled(directions, reverse, cols) -> bool:
    """Whether `_run_fwd` runs `s6_fwd_tiled_kernel`: one direction, first to last, not PROJ nor COLS,
    channel-major and at least `tiled_min_length` steps."""
    d = directions[0]
    least = tiled_min_length(d.u.device)
    return (least is not None and len(directions) == 1 and d.proj is None and not reverse and not cols
            and d.u.shape[2] >= least and d.u.stride(2) == 1 and d.delta.stride(2) == 1)


def _runs(bidir: bool, n_segs: int) -> list[tuple[bool, bool]]:
    """(RUN0, RUN1) of each launch: one launch, or for a pair split into segments one per direction (the
    second direction reads the first one's output or dz, all of it)."""
    if not bidir:
        return [(True, False)]
    return [(True, True)] if n_segs == 1 else [(True, False), (False, True)]


# Groups of e channels (tokens) per program of a PROJ launch, both kernels, one warp: the best of 4 to 32
# at every stage shape of vim2_tiny in the H100 sweep recorded in BENCHMARKS.md.
PROJ_GROUPS = 16


def _has_conv(proj) -> bool:
    return proj is not None and proj.conv_weight is not None


# Rows of the batch per launch: the grid's second axis takes at most 65535, the backward's scratch
# (CHUNK * BLOCK_D * BLOCK_N floats per program) is kept under SCRATCH_FLOATS, and every offset from a
# slice's base pointer stays at most MAX_OFFSET (the kernels index with 32-bit integers).
MAX_GRID_Y = 65535
SCRATCH_FLOATS = 2**26
MAX_OFFSET = 2**31 - 1


def _rows_for_32bit(tensors) -> int:
    """Batch rows per launch keeping every offset the kernels compute from a base pointer below 2**31 (a
    view such as B from a wide projection can span far more than its own element count)."""
    tensors = [t for t in tensors if t is not None and t.numel()]
    if all(t.untyped_storage().nbytes() <= MAX_OFFSET * t.element_size() for t in tensors):
        return MAX_OFFSET  # no offset into storages this small reaches 2**31 (strides are >= 0): no limit
    stride = max(t.stride(0) for t in tensors)
    extent = max(1 + sum((n - 1) * st for n, st in zip(t.shape[1:], t.stride()[1:])) for t in tensors)
    if extent > MAX_OFFSET:
        raise ValueError(f"u: one batch row of the scan's inputs spans {extent} elements; the Triton kernels take "
                         "fewer than 2**31 per row; use backend='torch'")
    return (MAX_OFFSET - extent) // stride + 1


def _row_slices(batch: int, rows_per_launch: int) -> list[slice | None]:
    """The batch rows of each launch: [None] when one launch takes the whole batch."""
    step = max(1, min(rows_per_launch, MAX_GRID_Y))
    if step >= batch:
        return [None]
    return [slice(start, min(start + step, batch)) for start in range(0, batch, step)]


def _rows(t, rows):
    """t[rows] for a batch-major buffer (t itself for rows None); empty placeholders pass through."""
    return t if rows is None or not t.numel() else t[rows]


def _groups(B):
    return 1 if B.dim() == 3 else B.shape[1]


def _dpgs(dim, *BCs):
    return tuple(dim // t.shape[1] for t in BCs if t is not None and t.dim() == 4)


def _n_chunks(length, chunk):
    return cdiv(length, chunk)


def _token_major(u) -> bool:
    """Whether u (batch, dim, L) keeps each step's channels together (stride of dim below that of L), as a
    (batch, L, dim) tensor seen through a transpose does; outputs and gradients then take that layout too,
    so each step of the kernels reads and writes one contiguous run of channels."""
    return u.stride(1) < u.stride(2)


def _empty_scan_layout(shape, token_major, **kwargs):
    """An empty (batch, ..., X, L) tensor, contiguous, or with token_major stored as (batch, ..., L, X)."""
    if token_major:
        return torch.empty(*shape[:-2], shape[-1], shape[-2], **kwargs).transpose(-1, -2)
    return torch.empty(shape, **kwargs)


def _summaries(u, n, n_segs):
    """Per-segment summaries (batch, n_segs, N + 1, dim) float32 of a split direction; empty without split."""
    batch, dim, _ = u.shape
    shape = (batch, n_segs, n + 1, dim) if n_segs > 1 else (0,)
    return torch.empty(shape, dtype=torch.float32, device=u.device)


class LaunchPlan(NamedTuple):
    """What a launch of one direction or a pair takes from its sizes and flags alone: BLOCK_D, BLOCK_N,
    CHUNK, E (1, or the PROJ mode's group of e channels), the programs along the channels, the segments
    (`segments`; the PROJ mode is never split), the kernels' `Sizes` and meta-parameters, and (RUN0, RUN1) of
    each launch (`_runs`)."""

    block_d: int
    block_n: int
    chunk: int
    e: int
    programs: int
    n_segs: int
    sizes: Sizes
    meta: dict
    runs: tuple


@functools.lru_cache(maxsize=1024)
def _plan(batch, dim, length, n, dpgs, e, device, has_bias, softplus, cols, bidir, sizing, splitting) -> LaunchPlan:
    """The `LaunchPlan`, cached: an eager call then spends no host time on it. e: 0, or the PROJ mode's group
    size. sizing, splitting: `block_sizes` and `segments` as they are now, so that a stand-in for either (the
    tests' small blocks, the sweeps' configurations) keys its own plans."""
    if e:  # PROJ_GROUPS groups of e channels per program, one warp
        block_d, block_n, chunk, warps = e * PROJ_GROUPS, next_power_of_2(n), CHUNK, 1
        n_segs, seg_len = 1, _n_chunks(length, chunk) * chunk
    else:
        block_d, block_n, chunk, warps = sizing(dim, length, n, dpgs)
        n_segs, seg_len = splitting(batch * cdiv(dim, block_d), length, chunk, device)
    sizes = Sizes(dim, length, n, max(cols, 1), _n_chunks(length, chunk), seg_len, n_segs)
    meta = dict(HAS_BIAS=has_bias, SOFTPLUS=softplus, COLS=cols > 0, BLOCK_D=block_d, BLOCK_N=block_n,
                num_warps=warps)
    return LaunchPlan(block_d, block_n, chunk, max(e, 1), cdiv(dim, block_d), n_segs, sizes, meta,
                      tuple(_runs(bidir, n_segs)))


def _plan_of(directions, delta_softplus, cols) -> LaunchPlan:
    """The `LaunchPlan` of a launch of `directions` (one `ScanDirection` or a pair)."""
    first = directions[0]
    batch, dim, length = first.u.shape
    e = 0 if first.proj is None else first.proj.Wx.shape[1]
    dpgs = () if e else _dpgs(dim, *(t for d in directions for t in (d.B, d.C)))
    return _plan(batch, dim, length, first.A.shape[1], dpgs, e, first.u.device, first.delta_bias is not None,
                 delta_softplus, cols, len(directions) == 2, block_sizes, segments)


def _run_fwd(directions, z, delta_softplus, reverse, save_states, cols):
    """The forward of one `ScanDirection` or a pair: out (batch, dim, L) in u's dtype and layout
    (`_token_major`), the last state (batch, dim, N) float32 (one direction only; empty for a pair), and each
    direction's states at chunk starts, (batch, chunks, N, dim) float32 (empty unless save_states). cols: 0,
    or H to scan the L = H * W positions, a row-major grid of H rows, column by column."""
    u, proj = directions[0].u, directions[0].proj
    batch, dim, length = u.shape
    n = directions[0].A.shape[1]
    bidir = len(directions) == 2
    plan = _plan_of(directions, delta_softplus, cols)
    f32 = dict(dtype=torch.float32, device=u.device)
    out = _empty_scan_layout(u.shape, _token_major(u), dtype=u.dtype, device=u.device)
    last = torch.empty((0,) if bidir else (batch, dim, n), **f32)
    states = [torch.empty((batch, plan.sizes.n_chunks, n, dim) if save_states else (0,), **f32) for _ in directions]
    tiled = _tiled(directions, reverse, cols)
    summaries = [_summaries(u, n, 1 if tiled else plan.n_segs) for _ in directions]
    tensors = [t for d in directions for t in (d.u, d.delta, d.B, d.C)] + [z, out, *states, *summaries]
    flags = dict(HAS_D=directions[0].D is not None, HAS_Z=z is not None, REVERSE=reverse, BIDIR=bidir,
                 SAVE_STATES=save_states, PROJ=proj is not None, CONV=_has_conv(proj), E=plan.e, CHUNK=plan.chunk)
    for rows in _row_slices(batch, _rows_for_32bit(tensors)):
        dirs = [d.kernel_args(rows, st, sm) for d, st, sm in zip(directions, states, summaries)]
        gate = None if z is None else Seq.of(_rows(z, rows))
        o = Seq.of(_rows(out, rows))
        grid = (plan.programs, o.ptr.shape[0], plan.n_segs)
        if tiled:
            block_t, warps = tiled_block(length, plan.chunk)
            with launch_device(u):
                s6_fwd_tiled_kernel[(dim, o.ptr.shape[0])](
                    dirs[0], gate, o, _rows(last, rows), plan.sizes, HAS_D=flags["HAS_D"],
                    HAS_BIAS=plan.meta["HAS_BIAS"], SOFTPLUS=delta_softplus, GATE=z is not None,
                    SAVE_STATES=save_states, STORE_LAST=True,
                    BLOCK_T=block_t, BLOCK_N=plan.block_n, CHUNK=plan.chunk, num_warps=warps)
            continue
        with launch_device(u):
            for runs in plan.runs:
                for d, run, rev in zip(dirs, runs, (reverse, True)):
                    if run and plan.n_segs > 1:
                        s6_segment_states_kernel[grid[:2] + (plan.n_segs - 1,)](d, plan.sizes, REVERSE=rev, **plan.meta)
                s6_fwd_kernel[grid](dirs[0], dirs[1] if bidir else None, gate, o, None if bidir else _rows(last, rows),
                                    plan.sizes, RUN0=runs[0], RUN1=runs[1], **flags, **plan.meta)
    return out, last, states[0], states[-1] if bidir else torch.empty(0, device=u.device)


def _launch_fwd(u, delta, A, B, C, D, delta_bias, u_rev, delta_rev, A_rev, B_rev, C_rev, D_rev, delta_bias_rev, z,
                dt_weight, dt_weight_rev, delta_softplus, reverse, save_states, cols=0):
    """`_run_fwd` with the ops' flat arguments (the reverse direction's seven None for a single direction);
    dt_weight, dt_weight_rev: None, or each direction's projection of a low-rank delta (`low_rank.full_delta`)."""
    directions = _directions(u, full_delta(delta, dt_weight), A, B, C, D, delta_bias, u_rev,
                             full_delta(delta_rev, dt_weight_rev), A_rev, B_rev, C_rev, D_rev, delta_bias_rev)
    return _run_fwd(directions, z, delta_softplus, reverse, save_states, cols)


@torch.library.custom_op("mambamixer::selective_scan_fwd", mutates_args=())
def selective_scan_fwd(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, delta_bias: torch.Tensor | None,
    u_rev: torch.Tensor | None, delta_rev: torch.Tensor | None, A_rev: torch.Tensor | None,
    B_rev: torch.Tensor | None, C_rev: torch.Tensor | None, D_rev: torch.Tensor | None,
    delta_bias_rev: torch.Tensor | None, z: torch.Tensor | None,
    dt_weight: torch.Tensor | None, dt_weight_rev: torch.Tensor | None,
    delta_softplus: bool, reverse: bool, save_states: bool, cols: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_launch_fwd` as a torch custom op, so `torch.compile` traces through the scan."""
    return _launch_fwd(u, delta, A, B, C, D, delta_bias, u_rev, delta_rev, A_rev, B_rev, C_rev, D_rev, delta_bias_rev,
                       z, dt_weight, dt_weight_rev, delta_softplus, reverse, save_states, cols)


@selective_scan_fwd.register_fake
def _(u, delta, A, B, C, D, delta_bias, u_rev, delta_rev, A_rev, B_rev, C_rev, D_rev, delta_bias_rev, z,
      dt_weight, dt_weight_rev, delta_softplus, reverse, save_states, cols):
    batch, dim, length = u.shape
    n = A.shape[1]
    _, _, chunk, _ = block_sizes(dim, length, n, _dpgs(dim, B, C, B_rev, C_rev))
    states_shape = (batch, _n_chunks(length, chunk), n, dim) if save_states else (0,)
    states = u.new_empty(states_shape, dtype=torch.float32)
    out = _empty_scan_layout(u.shape, _token_major(u), dtype=u.dtype, device=u.device)
    last = u.new_empty((0,) if u_rev is not None else (batch, dim, n), dtype=torch.float32)
    return (out, last, states,
            states.new_empty(states_shape if u_rev is not None else (0,)))


def _zeros_scan_layout(shapes, token_major, device) -> list[torch.Tensor]:
    """float32 zeros of each (batch, ..., X, L) shape in `shapes`, laid out as `_empty_scan_layout` does, cut
    from one allocation: one fill for all of them."""
    sizes = [math.prod(shape) for shape in shapes]
    flat = torch.zeros(sum(sizes), dtype=torch.float32, device=device)
    stored = [(*shape[:-2], shape[-1], shape[-2]) if token_major else shape for shape in shapes]
    pieces = [piece.view(shape) for piece, shape in zip(flat.split(sizes), stored)]
    return [piece.transpose(-1, -2) for piece in pieces] if token_major else pieces


def _grad_buffers(direction: ScanDirection, n_segs: int, dB: torch.Tensor | None, dC: torch.Tensor | None
                  ) -> Gradients:
    """A direction's `Gradients` over the whole batch: du, ddelta in the inputs' dtypes and u's layout; dB, dC
    (given) float32 zeros (added to atomically); dA, dD, d_delta_bias float32 per-segment partials (batch,
    n_segs, dim, ...), dA as (batch, n_segs, N, dim). PROJ (never split; dB, dC None): dA, dD, d_delta_bias,
    dWx, dw_dt (and the conv's) float32 per-sequence partials (batch, dim, ...), dA as (batch, N, dim), no
    ddelta."""
    u, proj = direction.u, direction.proj
    batch, dim, _ = u.shape
    n = direction.A.shape[1]
    f32 = dict(dtype=torch.float32, device=u.device)
    token_major = _token_major(u)
    du = _empty_scan_layout(u.shape, token_major, dtype=u.dtype, device=u.device)
    rows = (batch,) if proj is not None else (batch, n_segs)
    sums = dict(dA=torch.empty(*rows, n, dim, **f32), dD=torch.empty(*rows, dim, **f32),
                d_delta_bias=torch.empty(*rows, dim, **f32))
    if proj is not None:
        conv = _has_conv(proj)
        return Gradients(du, None, None, None, **sums, dWx=torch.empty(batch, dim, 1 + 2 * n, **f32),
                         dw_dt=torch.empty(batch, dim, **f32),
                         d_conv_weight=torch.empty(batch, dim, 4, **f32) if conv else None,
                         d_conv_bias=torch.empty(batch, dim, **f32) if conv else None)
    ddelta = _empty_scan_layout(direction.delta.shape, token_major, dtype=direction.delta.dtype, device=u.device)
    return Gradients(du, ddelta, dB, dC, **sums, dWx=None, dw_dt=None, d_conv_weight=None, d_conv_bias=None)


def _absent(like: torch.Tensor, empties: bool) -> torch.Tensor | None:
    """The gradient of an absent input: an empty tensor (a custom op returns tensors only) or None."""
    return like.new_empty(0) if empties else None


def _finish_grads(grads: Gradients, direction: ScanDirection, empties: bool) -> list:
    """A direction's `Gradients` -> gradients shaped and typed like (u, delta, A, B, C, D, delta_bias); absent
    inputs get `_absent`'s."""
    A, B, C, D, delta_bias = direction.A, direction.B, direction.C, direction.D, direction.delta_bias
    du = grads.du
    # dB and dC share one buffer (`_zeros_scan_layout`); a custom op's outputs may not alias each other, so
    # there (empties) float32 ones are copied out of it.
    dB = (grads.dB if B.dim() == 4 else grads.dB[:, 0]).to(B.dtype, copy=empties)
    dC = (grads.dC if C.dim() == 4 else grads.dC[:, 0]).to(C.dtype, copy=empties)
    dD = _absent(du, empties) if D is None else grads.dD.sum((0, 1)).to(D.dtype)
    dbias = _absent(du, empties) if delta_bias is None else grads.d_delta_bias.sum((0, 1)).to(delta_bias.dtype)
    dA = torch.empty_like(A, dtype=torch.float32)  # (dim, N) in A's layout: summed into, no copy
    torch.sum(grads.dA.transpose(2, 3), (0, 1), out=dA)
    return [du, grads.ddelta, dA.to(A.dtype), dB, dC, dD, dbias]


def _run_bwd(dout, states, directions, z, delta_softplus, reverse, cols=0):
    """Run the backward kernels of `_run_fwd`: dout (batch, dim, L); states: each direction's saved states.
    Returns each direction's `Gradients` and dz (u's layout; None without z)."""
    u, proj = directions[0].u, directions[0].proj
    batch, dim, length = u.shape
    n = directions[0].A.shape[1]
    bidir = len(directions) == 2
    plan = _plan_of(directions, delta_softplus, cols)
    token_major = _token_major(u)
    if proj is None:  # every direction's dB and dC, zeroed at once
        shapes = [(batch, _groups(t), n, length) for d in directions for t in (d.B, d.C)]
        dBCs = _zeros_scan_layout(shapes, token_major, u.device)
    else:
        dBCs = [None] * 2 * len(directions)
    grads = [_grad_buffers(d, plan.n_segs, *dBCs[2 * i:2 * i + 2]) for i, d in enumerate(directions)]
    summaries = [_summaries(u, n, plan.n_segs) for _ in directions]
    dz = None if z is None else _empty_scan_layout(u.shape, token_major, dtype=z.dtype, device=u.device)
    per_row = plan.programs * plan.n_segs * plan.chunk * plan.block_d * (plan.block_n + _has_conv(proj))
    tensors = ([t for d in directions for t in (d.u, d.delta, d.B, d.C)] + [dout, *states, z, dz, *summaries]
               + [t for g in grads for t in g])
    slices = _row_slices(batch, min(SCRATCH_FLOATS // per_row, _rows_for_32bit(tensors)))
    rows_per_launch = batch if slices[0] is None else slices[0].stop - slices[0].start
    scratch = torch.empty(rows_per_launch * per_row, dtype=torch.float32, device=u.device)
    flags = dict(HAS_D=directions[0].D is not None, HAS_Z=z is not None, REVERSE=reverse, TOKEN_MAJOR=token_major,
                 PROJ=proj is not None, CONV=_has_conv(proj), E=plan.e, CHUNK=plan.chunk)
    for rows in slices:
        dirs = [d.kernel_args(rows, st, sm) for d, st, sm in zip(directions, states, summaries)]
        dir_grads = [Gradients(*(None if t is None else _rows(t, rows) for t in g)) for g in grads]
        gate = None if z is None else Seq.of(_rows(z, rows))
        do = Seq.of(_rows(dout, rows))
        grid = (plan.programs, do.ptr.shape[0], plan.n_segs)
        with launch_device(u):
            for runs in plan.runs:
                for d, run, rev in zip(dirs, runs, (reverse, True)):
                    if run and plan.n_segs > 1:
                        s6_segment_adjoints_kernel[grid[:2] + (plan.n_segs - 1,)](
                            d, gate, do, plan.sizes, GATE=z is not None, REVERSE=rev, **plan.meta)
                s6_bwd_kernel[grid](dirs[0], dir_grads[0], dirs[1] if bidir else None, dir_grads[1] if bidir else None,
                                    gate, do, None if dz is None else _rows(dz, rows), scratch, plan.sizes,
                                    RUN0=runs[0], RUN1=runs[1], **flags, **plan.meta,
                                    maxnreg=None if flags["PROJ"] else BWD_MAX_REGISTERS)
    return grads, dz


def _launch_bwd(dout, states, states_rev, u, delta, A, B, C, D, delta_bias, u_rev, delta_rev, A_rev, B_rev, C_rev,
                D_rev, delta_bias_rev, z, dt_weight, dt_weight_rev, delta_softplus, reverse, cols, empties=True):
    """Gradients of (u, delta, A, B, C, D, delta_bias), then of the reverse direction's seven, then of z,
    dt_weight and dt_weight_rev; an absent input's is an empty tensor, or None unless `empties`. A low-rank
    delta's full delta is formed again here (`low_rank.full_delta`)."""
    directions = _directions(u, full_delta(delta, dt_weight), A, B, C, D, delta_bias, u_rev,
                             full_delta(delta_rev, dt_weight_rev), A_rev, B_rev, C_rev, D_rev, delta_bias_rev)
    grads, dz = _run_bwd(dout, (states, states_rev), directions, z, delta_softplus, reverse, cols)
    out = [g for grad, d in zip(grads, directions) for g in _finish_grads(grad, d, empties)]
    if len(directions) == 1:
        out += [_absent(u, empties) for _ in range(7)]
    d_weights = [_absent(u, empties), _absent(u, empties)]
    for i, (low, weight) in enumerate(((delta, dt_weight), (delta_rev, dt_weight_rev))):
        if weight is not None:
            out[7 * i + 1], d_weights[i] = low_rank_grads(out[7 * i + 1], low, weight, _token_major(u))
    return out + [_absent(u, empties) if dz is None else dz] + d_weights


@torch.library.custom_op("mambamixer::selective_scan_bwd", mutates_args=())
def selective_scan_bwd(
    dout: torch.Tensor, states: torch.Tensor, states_rev: torch.Tensor,
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, delta_bias: torch.Tensor | None,
    u_rev: torch.Tensor | None, delta_rev: torch.Tensor | None, A_rev: torch.Tensor | None,
    B_rev: torch.Tensor | None, C_rev: torch.Tensor | None, D_rev: torch.Tensor | None,
    delta_bias_rev: torch.Tensor | None, z: torch.Tensor | None,
    dt_weight: torch.Tensor | None, dt_weight_rev: torch.Tensor | None,
    delta_softplus: bool, reverse: bool, cols: int,
) -> list[torch.Tensor]:
    """`_launch_bwd` as a torch custom op."""
    return _launch_bwd(dout, states, states_rev, u, delta, A, B, C, D, delta_bias, u_rev, delta_rev, A_rev, B_rev,
                       C_rev, D_rev, delta_bias_rev, z, dt_weight, dt_weight_rev, delta_softplus, reverse, cols)


@selective_scan_bwd.register_fake
def _(dout, states, states_rev, u, delta, A, B, C, D, delta_bias, u_rev, delta_rev, A_rev, B_rev, C_rev, D_rev,
      delta_bias_rev, z, dt_weight, dt_weight_rev, delta_softplus, reverse, cols):
    token_major = _token_major(u)

    def like(t, layout):  # "scan": u's layout (the (..., X, L) tensors), "own": t's (dA), else contiguous
        if t is None:
            return u.new_empty(0)
        if layout == "scan":
            return _empty_scan_layout(t.shape, token_major, dtype=t.dtype, device=t.device)
        return torch.empty_like(t) if layout == "own" else torch.empty_like(t, memory_format=torch.contiguous_format)

    directions = ((u, delta, A, B, C, D, delta_bias), (u_rev, delta_rev, A_rev, B_rev, C_rev, D_rev, delta_bias_rev))
    layouts = ("scan", "scan", "own", "scan", "scan", None, None)
    return ([like(t, layout) for direction in directions for t, layout in zip(direction, layouts)]
            + [like(z, "scan"), like(dt_weight, None), like(dt_weight_rev, None)])


def _setup_context(ctx, inputs, output):
    *tensors, delta_softplus, reverse, _, cols = inputs
    ctx.save_for_backward(*tensors, output[2], output[3])
    ctx.present = [t is not None for t in tensors]
    ctx.delta_softplus, ctx.reverse, ctx.cols = delta_softplus, reverse, cols


def _gradients(ctx, dout, backward_op):
    """The inputs' gradients (None for absent inputs and the four flags) through `backward_op`."""
    *tensors, states, states_rev = ctx.saved_tensors
    if states.numel() == 0:
        raise RuntimeError("selective_scan: the forward ran without saving states for backward "
                           "(its inputs did not require grad when it ran)")
    grads = backward_op(dout, states, states_rev, *tensors, ctx.delta_softplus, ctx.reverse, ctx.cols)
    return (*[g if present else None for g, present in zip(grads, ctx.present)], None, None, None, None)


def _backward(ctx, dout, _dlast, _dstates, _dstates_rev):
    return _gradients(ctx, dout, selective_scan_bwd)


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


class _EagerScan(torch.autograd.Function):
    """The same forward and backward without the custom-op dispatch, for eager mode (less call overhead: no
    zero gradients are made for the non-differentiable outputs, nor empty ones for absent inputs)."""

    @staticmethod
    def forward(ctx, *inputs):
        outputs = _launch_fwd(*inputs)
        _setup_context(ctx, inputs, outputs)
        ctx.mark_non_differentiable(*outputs[1:])
        ctx.set_materialize_grads(False)
        return outputs

    @staticmethod
    def backward(ctx, dout, _dlast, _dstates, _dstates_rev):
        return _gradients(ctx, dout, functools.partial(_launch_bwd, empties=False))


def _check_row_scratch(u, A):
    """The kernels index with 32-bit offsets; the launchers slice the batch so that offsets from each slice's
    base fit, which leaves one batch row's backward scratch (dim * CHUNK * (N + 1) floats at most) as the limit."""
    if u.shape[1] * CHUNK * (next_power_of_2(A.shape[1]) + 1) >= 2**31:
        raise ValueError(f"u: the Triton kernels take dim * {CHUNK} * (N + 1) below 2**31, got shape "
                         f"{tuple(u.shape)} with N={A.shape[1]}; use backend='torch'")


def _scan(*inputs):
    """The custom op while torch.compile traces, the autograd Function otherwise."""
    _check_row_scratch(inputs[0], inputs[2])
    if torch.compiler.is_compiling():
        return selective_scan_fwd(*inputs)
    return _EagerScan.apply(*inputs)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, reverse=False, delta_proj_weight=None):
    """`selective_scan_ref`'s arguments and results (float32/float16/bfloat16 inputs) through the kernels;
    with delta_proj_weight (dim, r), delta is low-rank (batch, r, L) (`low_rank.full_delta`)."""
    inputs = (u, delta, A, B, C, D, z, delta_bias, delta_proj_weight)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    out, last, _, _ = _scan(u, delta, A, B, C, D, delta_bias, None, None, None, None, None, None, None, z,
                            delta_proj_weight, None, delta_softplus, reverse, save, 0)
    return (out, last.detach()) if return_last_state else out


def selective_scan_bidirectional_triton(forward, backward, z=None, delta_softplus=False, cols=0,
                                        delta_proj_weight=(None, None)):
    """The fused pair of directions: `forward` and `backward` are (u, delta, A, B, C, D, delta_bias); cols as
    in `_run_fwd`; delta_proj_weight: each direction's projection of a low-rank delta, or None."""
    inputs = (*forward, *backward, z, *delta_proj_weight)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    return _scan(*forward, *backward, z, *delta_proj_weight, delta_softplus, False, save, cols)[0]


def _per_weight(t: torch.Tensor, e: int, transpose: bool = False, like: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, groups * e, ...) per-channel partial sums -> (e, ...), summed over the batch and the groups in one
    reduction, contiguous or in the layout of `like`; with `transpose`, (batch, groups * e, X) -> (X, e)."""
    parts = t.unflatten(1, (-1, e))
    if transpose:
        parts = parts.transpose(2, 3)
    out = parts.new_empty(parts.shape[2:]) if like is None else torch.empty_like(like, dtype=t.dtype)
    return torch.sum(parts, (0, 1), out=out)


def _conv_by_lag(weight, reverse):
    """A direction's conv weight (e, K), K <= 4, as the kernels take it: (e, 4) float32 by lag in scan order
    (the forward direction's weight k multiplies u_{t-K+1+k}, the backward direction's u_{t+k})."""
    lag = weight.float() if reverse else weight.float().flip(-1)
    return torch.nn.functional.pad(lag, (0, 4 - lag.shape[1])).contiguous()


def _projection(Wx, wdt, cw, cb, reverse) -> Projection:
    """A direction's `Projection`, float32 and contiguous, for the kernels (conv weight by lag; None for no
    conv)."""
    if cw is None:
        return Projection(Wx.float().contiguous(), wdt.float().contiguous(), None, None)
    cb = torch.zeros(cw.shape[0], device=cw.device) if cb is None else cb
    return Projection(Wx.float().contiguous(), wdt.float().contiguous(), _conv_by_lag(cw, reverse),
                      cb.float().contiguous())


def _projected_directions(u, A, Wx, wdt, D, bias, u_r, A_r, Wx_r, wdt_r, D_r, bias_r, cw, cb, cw_r, cb_r):
    """The PROJ pair's two `ScanDirection`s from the projected op's arguments (see `_projected_fwd`)."""
    return [ScanDirection(u, None, A, None, None, D, bias, _projection(Wx, wdt, cw, cb, False)),
            ScanDirection(u_r, None, A_r, None, None, D_r, bias_r, _projection(Wx_r, wdt_r, cw_r, cb_r, True))]


def _projected_fwd(z, u, A, Wx, wdt, D, bias, u_r, A_r, Wx_r, wdt_r, D_r, bias_r, cw, cb, cw_r, cb_r, save_states):
    """The PROJ forward of a direction pair: out (batch, groups * e, L) and each direction's states at chunk
    starts (empty unless save_states). Per direction: u (batch, groups * e, L), A (e, N), Wx (1 + 2N, e),
    w_dt (e,), D (e,), bias (e,), and the optional conv's weight (e, K) and bias (e,)."""
    directions = _projected_directions(u, A, Wx, wdt, D, bias, u_r, A_r, Wx_r, wdt_r, D_r, bias_r, cw, cb, cw_r, cb_r)
    out, _, states, states_rev = _run_fwd(directions, z, True, False, save_states, 0)
    return out, states, states_rev


def _projected_bwd(dout, states, states_rev, z, *inputs):
    """Gradients of `_projected_fwd`'s z and sixteen direction and conv inputs, in its argument order (an
    empty tensor for an absent conv weight or bias)."""
    directions = _projected_directions(*inputs)
    grads, dz = _run_bwd(dout, (states, states_rev), directions, z, True, False)
    e = directions[0].proj.Wx.shape[1]
    out, conv_grads = [dz], []
    per_direction = (inputs[:6], inputs[6:12])
    convs = (inputs[12:14], inputs[14:16])
    for g, (_, A, Wx, wdt, D, bias), (cw, cb), reverse in zip(grads, per_direction, convs, (False, True)):
        out += [g.du, _per_weight(g.dA.transpose(1, 2), e, like=A).to(A.dtype),
                _per_weight(g.dWx, e, transpose=True).to(Wx.dtype), _per_weight(g.dw_dt, e).to(wdt.dtype),
                _per_weight(g.dD, e).to(D.dtype),
                _per_weight(g.d_delta_bias, e).to(bias.dtype)]
        if cw is None:
            conv_grads += [g.du.new_empty(0), g.du.new_empty(0)]
            continue
        dcw = _per_weight(g.d_conv_weight, e)[:, :cw.shape[1]]
        conv_grads += [(dcw if reverse else dcw.flip(-1)).contiguous().to(cw.dtype),
                       g.du.new_empty(0) if cb is None else _per_weight(g.d_conv_bias, e).to(cb.dtype)]
    return out + conv_grads


@torch.library.custom_op("mambamixer::selective_scan_projected_fwd", mutates_args=())
def selective_scan_projected_fwd(
    z: torch.Tensor, u: torch.Tensor, A: torch.Tensor, Wx: torch.Tensor, wdt: torch.Tensor, D: torch.Tensor,
    bias: torch.Tensor, u_r: torch.Tensor, A_r: torch.Tensor, Wx_r: torch.Tensor, wdt_r: torch.Tensor,
    D_r: torch.Tensor, bias_r: torch.Tensor, cw: torch.Tensor | None, cb: torch.Tensor | None,
    cw_r: torch.Tensor | None, cb_r: torch.Tensor | None, save_states: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_projected_fwd` as a torch custom op, so `torch.compile` traces through the projected scan."""
    return _projected_fwd(z, u, A, Wx, wdt, D, bias, u_r, A_r, Wx_r, wdt_r, D_r, bias_r, cw, cb, cw_r, cb_r,
                          save_states)


@selective_scan_projected_fwd.register_fake
def _(z, u, A, Wx, wdt, D, bias, u_r, A_r, Wx_r, wdt_r, D_r, bias_r, cw, cb, cw_r, cb_r, save_states):
    batch, dim, length = u.shape
    shape = (batch, _n_chunks(length, CHUNK), A.shape[1], dim) if save_states else (0,)
    out = _empty_scan_layout(u.shape, _token_major(u), dtype=u.dtype, device=u.device)
    return out, u.new_empty(shape, dtype=torch.float32), u.new_empty(shape, dtype=torch.float32)


@torch.library.custom_op("mambamixer::selective_scan_projected_bwd", mutates_args=())
def selective_scan_projected_bwd(
    dout: torch.Tensor, states: torch.Tensor, states_rev: torch.Tensor, z: torch.Tensor,
    u: torch.Tensor, A: torch.Tensor, Wx: torch.Tensor, wdt: torch.Tensor, D: torch.Tensor, bias: torch.Tensor,
    u_r: torch.Tensor, A_r: torch.Tensor, Wx_r: torch.Tensor, wdt_r: torch.Tensor, D_r: torch.Tensor,
    bias_r: torch.Tensor, cw: torch.Tensor | None, cb: torch.Tensor | None, cw_r: torch.Tensor | None,
    cb_r: torch.Tensor | None,
) -> list[torch.Tensor]:
    """`_projected_bwd` as a torch custom op."""
    return _projected_bwd(dout, states, states_rev, z, u, A, Wx, wdt, D, bias, u_r, A_r, Wx_r, wdt_r, D_r, bias_r,
                          cw, cb, cw_r, cb_r)


@selective_scan_projected_bwd.register_fake
def _(dout, states, states_rev, z, *inputs):
    layout_of = {0: inputs[0], 1: inputs[0], 7: inputs[6]}  # dz, du, du_r take their u's layout (`_token_major`)
    own = (2, 8)  # dA, dA_r take A's
    return [dout.new_empty(0) if t is None else
            _empty_scan_layout(t.shape, _token_major(layout_of[i]), dtype=t.dtype, device=t.device) if i in layout_of
            else torch.empty_like(t) if i in own
            else torch.empty_like(t, memory_format=torch.contiguous_format) for i, t in enumerate((z, *inputs))]


def _present(grads, inputs):
    """The backward op's gradients with None for the absent (None) inputs."""
    return [None if t is None else g for g, t in zip(grads, inputs)]


def _projected_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:-1], output[1], output[2])


def _projected_backward(ctx, dout, _dstates, _dstates_rev):
    z, *inputs, states, states_rev = ctx.saved_tensors
    if states.numel() == 0:
        raise RuntimeError("selective_scan_projected: the forward ran without saving states for backward "
                           "(its inputs did not require grad when it ran)")
    grads = selective_scan_projected_bwd(dout, states, states_rev, z, *inputs)
    return (*_present(grads, (z, *inputs)), None)


selective_scan_projected_fwd.register_autograd(_projected_backward, setup_context=_projected_setup_context)


class _ProjectedScan(torch.autograd.Function):
    """The same forward and backward without the custom-op dispatch, for eager mode."""

    @staticmethod
    def forward(ctx, *inputs):
        save = any(ctx.needs_input_grad)
        out, states, states_rev = _projected_fwd(*inputs, save)
        ctx.save_for_backward(*inputs, states, states_rev)
        return out

    @staticmethod
    def backward(ctx, dout):
        z, *inputs, states, states_rev = ctx.saved_tensors
        return tuple(_present(_projected_bwd(dout, states, states_rev, z, *inputs), (z, *inputs)))


def selective_scan_projected_triton(forward, backward, z, conv=(None, None, None, None)):
    """`selective_scan_projected_bidirectional_fn` through the kernels' PROJ mode (e a power of two):
    `forward` and `backward` are (u, A, x_weight, dt_weight, dt_bias, D); `conv` the forward direction's
    conv weight (e, K <= 4) and bias, then the backward direction's (all None: no conv). Under
    torch.compile through the custom op, otherwise the autograd Function."""
    _check_row_scratch(forward[0], forward[1])
    (u, A, Wx, wdt, bias, D), (u_r, A_r, Wx_r, wdt_r, bias_r, D_r) = forward, backward
    inputs = (z, u, A, Wx, wdt, D, bias, u_r, A_r, Wx_r, wdt_r, D_r, bias_r, *conv)
    if torch.compiler.is_compiling():
        save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
        return selective_scan_projected_fwd(*inputs, save)[0]
    return _ProjectedScan.apply(*inputs)
