"""The tiled S6 forward (`triton_tiled`) at long channel-major L, against the step kernels and optionally
mamba_ssm, on CUDA.

    python bench/s6_tiled.py --out DIR [--mamba BUILT]

First checks the tiled forward in float32 against the float64 recurrence, forward and every gradient, at
lengths that end mid-tile and mid-chunk. Then, for each shape, times one direction (bf16 u, delta, z, B, C
stored (batch, dim, L) contiguous, mamba_ssm's layout; D, delta_bias, softplus) forward and forward+backward
(median of `do_bench_cudagraph`): the tiled forward at each tiling (steps per tile x warps), and the step
kernels unsplit and cut into 8 segments. With --mamba (a reference built by `build_mamba_ssm_reference.py`)
mamba_ssm's time is measured in the same process. Prints a table and writes DIR/s6_tiled.json.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import triton
from s6_triton import (
    check,
    checks,
    exact,
    failures,
    forced_segments,
    grads_of,
    inputs,
    load_reference,
    rel,
    timed,
    with_grad,
)

from mambamixer.kernels import selective_scan_fn
from mambamixer.kernels.selective_scan import selective_scan_fast, triton_op, triton_tiled

SHAPES = [(8, 1536, 1024, 16), (8, 1536, 4096, 16)]
SPLITS = (1, 8)
TILINGS = ((256, 1), (512, 1), (512, 2), (1024, 4))  # (steps per tile, warps)


def check_tiled():
    for (batch, dim, length, n), groups in (((2, 64, 4096, 16), None), ((1, 8, 1031, 16), 2), ((3, 16, 1500, 5), None)):
        a = inputs(batch, dim, length, n, torch.float32, groups, seed=length)
        a["delta_softplus"] = True
        dout = torch.randn(batch, dim, length, device="cuda")
        out, g = grads_of(lambda **k: selective_scan_fn(**k, backend="triton"), a, dout)
        ref, gr = grads_of(lambda **k: selective_scan_fast(**k), exact(a), dout)
        check(f"tiled float32 {(batch, dim, length, n)} groups={groups}",
              {"out": rel(out, ref), **{f"d{k}": rel(g[k], gr[k]) for k in g}}, 1e-5)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--mamba", help="a mamba_ssm reference built by build_mamba_ssm_reference.py")
    args = p.parse_args()
    mamba = load_reference(args.mamba, None) if args.mamba else None
    check_tiled()
    default_segments, default_least = triton_op.segments, triton_op.TILED_MIN_LENGTH
    default_tiling = triton_tiled.TILE_STEPS, triton_tiled.TILE_WARPS
    rows = []

    def record(**row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    for shape in SHAPES:
        batch, dim, length, n = shape
        base = inputs(*shape, torch.bfloat16, seed=3)
        dout = torch.randn(batch, dim, length, device="cuda", dtype=torch.bfloat16)
        if mamba is not None:
            _, _, f, fb = timed(lambda **k: mamba(**k, delta_softplus=True), with_grad(dict(base)), dout, eager=False)
            record(shape=shape, impl="mamba_ssm", fwd_ms=f, fwd_bwd_ms=fb)
        a = with_grad(dict(base))
        a["delta_softplus"] = True
        for steps, warps in TILINGS:
            triton_tiled.TILE_STEPS, triton_tiled.TILE_WARPS = steps, warps
            try:
                _, _, f, fb = timed(lambda **k: selective_scan_fn(**k, backend="triton"), a, dout, eager=False)
            finally:
                triton_tiled.TILE_STEPS, triton_tiled.TILE_WARPS = default_tiling
            record(shape=shape, impl=f"tiled fwd {steps}x{warps}", fwd_ms=f, fwd_bwd_ms=fb)
        triton_op.TILED_MIN_LENGTH = 1 << 30
        try:
            for split in SPLITS:
                triton_op.segments = forced_segments(split)
                _, _, f, fb = timed(lambda **k: selective_scan_fn(**k, backend="triton"), a, dout, eager=False)
                record(shape=shape, impl=f"steps, {split} segments", fwd_ms=f, fwd_bwd_ms=fb)
        finally:
            triton_op.segments, triton_op.TILED_MIN_LENGTH = default_segments, default_least
    print(f"\nchecks: {len(checks) - len(failures)}/{len(checks)} passed {failures}")
    print("\n| shape | impl | fwd ms | fwd+bwd ms |")
    print("| --- | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['shape']} | {r['impl']} | {r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} |")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "s6_tiled.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                       checks=checks, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
