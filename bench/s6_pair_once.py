"""One forward and backward of the fused S6 pair as ViM2's token mixer runs it, for a profiler to look at.

    python bench/s6_pair_once.py BATCH DIM SIDE [--columns | --channel]
    ncu -k regex:s6_bwd_kernel -s 1 -c 1 --section WarpStateStats --section Occupancy \\
        python bench/s6_pair_once.py 128 192 56

DIM channels (the token mixer's d_inner) over SIDE x SIDE tokens: u, delta, z stored (batch, L, DIM), B and C
views of a (batch, L, dt_rank + 2N) projection, N = 16, bf16; --columns scans down the grid's columns.
--channel instead runs a `ChannelWiseSelectiveMixer` of DIM channels (its conv and projections in the
kernels, as ViM2 runs it) on (batch, SIDE, SIDE, DIM) under bf16 autocast. Runs twice (the first compiles
the kernels).
"""

from __future__ import annotations

import sys

import torch

from mambamixer.kernels import selective_scan_bidirectional_fn
from mambamixer.mixer import ChannelWiseSelectiveMixer


def direction(batch: int, dim: int, length: int, n: int = 16) -> list:
    rank = dim // 32
    proj = torch.randn(batch, length, rank + 2 * n, device="cuda", dtype=torch.bfloat16).requires_grad_()
    return [torch.randn(batch, length, dim, device="cuda", dtype=torch.bfloat16).mT.requires_grad_(),
            (0.5 * torch.randn(batch, length, dim, device="cuda")).bfloat16().mT.requires_grad_(),
            (-torch.rand(dim, n, device="cuda") - 0.5).requires_grad_(),
            proj[..., rank:rank + n].mT, proj[..., rank + n:].mT,
            torch.ones(dim, device="cuda", requires_grad=True), torch.zeros(dim, device="cuda", requires_grad=True)]


def main() -> None:
    batch, dim, side = (int(a) for a in sys.argv[1:4])
    length = side * side
    if "--channel" in sys.argv:
        mixer = ChannelWiseSelectiveMixer(dim).cuda()
        x = torch.randn(batch, side, side, dim, device="cuda", requires_grad=True)
        for _ in range(2):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = mixer(x)
            out.backward(torch.randn_like(out))
        torch.cuda.synchronize()
        return
    pair = [direction(batch, dim, length) for _ in range(2)]
    z = torch.randn(batch, length, dim, device="cuda", dtype=torch.bfloat16).mT.requires_grad_()
    height = side if "--columns" in sys.argv else None
    for _ in range(2):
        out = selective_scan_bidirectional_fn(*zip(*pair), z=z, delta_softplus=True, column_grid_height=height)
        out.backward(torch.randn_like(out))
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
