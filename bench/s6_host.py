"""Where the host time of an eager S6 call goes, on the GPU machine.

    python bench/s6_host.py [--out DIR]

Times `selective_scan_fn(backend="triton")` on a tiny shape (batch 2, 64 channels, L 16: the device work is
negligible, so the loop is bound by the host), forward alone and forward + backward, 200 calls each, then
runs the same loops under cProfile and prints the functions that take the most time of their own
(ours, torch's, Triton's launcher). With --out, writes DIR/s6_host.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time

import torch

import mambamixer
from mambamixer.kernels import selective_scan_fn

CALLS = 200
PACKAGE = os.path.dirname(mambamixer.__file__)


def scan_inputs():
    """bf16 (2, 64, 16) u, delta, z, B, C with N = 16, float32 A, D, delta_bias, all requiring grad."""
    g = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape, dtype=torch.bfloat16):
        return torch.randn(*shape, device="cuda", generator=g).to(dtype).requires_grad_(True)

    return dict(u=randn(2, 64, 16), delta=randn(2, 64, 16), z=randn(2, 64, 16), B=randn(2, 16, 16),
                C=randn(2, 16, 16), A=(-torch.rand(64, 16, device="cuda", generator=g)).requires_grad_(True),
                D=randn(64, dtype=torch.float32), delta_bias=randn(64, dtype=torch.float32))


def steps():
    a = scan_inputs()
    dout = torch.randn(2, 64, 16, device="cuda", dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            selective_scan_fn(**a, delta_softplus=True, backend="triton")

    def fwd_bwd():
        selective_scan_fn(**a, delta_softplus=True, backend="triton").backward(dout)

    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


def per_call_us(step) -> float:
    for _ in range(20):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(CALLS):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / CALLS * 1e6


def profile(step) -> list[dict]:
    """Every function's calls, own time and cumulative time per call (microseconds) over CALLS calls."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(CALLS):
        step()
    torch.cuda.synchronize()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    return [dict(function=f"{os.path.basename(file)}:{line}({name})", ours=file.startswith(PACKAGE),
                 calls_per_call=calls / CALLS, own_us=own / CALLS * 1e6, cumulative_us=cum / CALLS * 1e6)
            for (file, line, name), (_, calls, own, cum, _) in stats.items()]


def table(title: str, rows: list[dict]) -> None:
    print(f"{title}\n| function | calls per call | own us | cumulative us |\n| --- | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['function']} | {row['calls_per_call']:g} | {row['own_us']:.1f} | {row['cumulative_us']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    result = {"device": torch.cuda.get_device_name()}
    for mode, step in steps().items():
        result[f"{mode}_us"] = per_call_us(step)
        rows = profile(step)
        result[f"{mode}_profile"] = rows
        print(f"== {mode}: {result[f'{mode}_us']:.0f} us per call (without the profiler)")
        table("by own time, all", sorted(rows, key=lambda r: -r["own_us"])[:args.top])
        ours = sorted((r for r in rows if r["ours"]), key=lambda r: -r["cumulative_us"])
        table("by cumulative time, this package", ours[:args.top])
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "s6_host.json"), "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
