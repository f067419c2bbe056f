"""Where the host time of an eager S6 call goes.

    python bench/s6_host.py [--out DIR]                       # on the GPU machine
    TRITON_INTERPRET=1 python bench/s6_host.py --cpu [--out DIR]  # anywhere: the kernel launches skipped

Times `selective_scan_fn(backend="triton")` on a tiny shape (batch 2, 64 channels, L 16: the device work is
negligible, so the loop is bound by the host), forward alone and forward + backward, 200 calls each, counts
the torch operators each call dispatches (on a GPU, each one that computes is a kernel launch of its own
beside the Triton kernel's), then runs the same loops under cProfile and prints the functions that take the
most time of their own (ours, torch's, Triton's launcher). With --cpu the tensors are on the CPU and the
Triton kernels are not launched at all, so the time is that of the Python and torch work around them.
With --out, writes DIR/s6_host.json (--cpu: DIR/s6_host_cpu.json).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import os
import pstats
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import mambamixer
from mambamixer.kernels import selective_scan_fn
from mambamixer.kernels.selective_scan import triton_op

CALLS = 200
PACKAGE = os.path.dirname(mambamixer.__file__)


KERNELS = ("s6_fwd_kernel", "s6_bwd_kernel", "s6_segment_states_kernel", "s6_segment_adjoints_kernel")


class _SkippedLaunch:
    """Stands in for a Triton kernel: `kernel[grid](...)` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def skip_launches(set_attribute=setattr) -> None:
    """The S6 kernels' launches do nothing from now on (the tests pass pytest's monkeypatch.setattr, which undoes
    it); their launchers still allocate and save all they would on a GPU."""
    for name in KERNELS:
        set_attribute(triton_op, name, _SkippedLaunch())


class OperatorCount(TorchDispatchMode):
    """Counts the torch operators dispatched inside it, by name."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def scan_inputs(device):
    """bf16 (2, 64, 16) u, delta, z, B, C with N = 16, float32 A (channels adjacent, as the layers store it), D,
    delta_bias, all requiring grad."""
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape, dtype=torch.bfloat16):
        return torch.randn(*shape, device=device, generator=g).to(dtype).requires_grad_(True)

    return dict(u=randn(2, 64, 16), delta=randn(2, 64, 16), z=randn(2, 64, 16), B=randn(2, 16, 16),
                C=randn(2, 16, 16), A=(-torch.rand(16, 64, device=device, generator=g)).t().requires_grad_(True),
                D=randn(64, dtype=torch.float32), delta_bias=randn(64, dtype=torch.float32))


def steps(device):
    a = scan_inputs(device)
    dout = torch.randn(2, 64, 16, device=device, dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            selective_scan_fn(**a, delta_softplus=True, backend="triton")

    def fwd_bwd():
        for t in a.values():  # as after an optimizer's zero_grad: the gradients are taken, not added to
            t.grad = None
        selective_scan_fn(**a, delta_softplus=True, backend="triton").backward(dout)

    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def per_call_us(step, device) -> float:
    """The fastest of 5 rounds of CALLS calls, per call."""
    for _ in range(20):
        step()
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(CALLS):
            step()
        synchronize(device)
        best = min(best, (time.perf_counter() - t0) / CALLS * 1e6)
    return best


def operators(step) -> dict[str, int]:
    """The torch operators one call dispatches, by name, most frequent first."""
    with OperatorCount() as count:
        step()
    return dict(count.counts.most_common())


def profile(step, device) -> list[dict]:
    """Every function's calls, own time and cumulative time per call (microseconds) over CALLS calls."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(CALLS):
        step()
    synchronize(device)
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
    parser.add_argument("--cpu", action="store_true", help="CPU tensors, the Triton kernels not launched "
                        "(needs TRITON_INTERPRET=1)")
    args = parser.parse_args()
    if args.cpu:
        if os.environ.get("TRITON_INTERPRET") != "1":
            parser.error("--cpu: set TRITON_INTERPRET=1 (the Triton path takes CPU tensors only under it)")
        skip_launches()
    device = "cpu" if args.cpu else "cuda"
    result = {"device": "cpu, kernel launches skipped" if args.cpu else torch.cuda.get_device_name()}
    for mode, step in steps(device).items():
        result[f"{mode}_us"] = per_call_us(step, device)
        result[f"{mode}_operators"] = ops = operators(step)
        rows = profile(step, device)
        result[f"{mode}_profile"] = rows
        print(f"== {mode}: {result[f'{mode}_us']:.1f} us per call (without the profiler); "
              f"{sum(ops.values())} torch operators: " + ", ".join(f"{k} {v}" for k, v in ops.items()))
        table("by own time, all", sorted(rows, key=lambda r: -r["own_us"])[:args.top])
        ours = sorted((r for r in rows if r["ours"]), key=lambda r: -r["cumulative_us"])
        table("by cumulative time, this package", ours[:args.top])
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "s6_host_cpu.json" if args.cpu else "s6_host.json"), "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
