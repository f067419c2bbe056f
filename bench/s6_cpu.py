"""CPU benchmark of the fast PyTorch selective scan against the per-step loop.

    python bench/s6_cpu.py --out DIR [--threads 2] [--reps 5] [--baseline REV]

`selective_scan_fast` (chunked, hand-written backward) and the reference, `per_step_loop` (the same
math with decays and inputs formed in vectorised passes, then one autograd-recorded update per time
step), on the same float32 inputs (z, D, delta_bias, softplus; B/C shared), forward + backward and forward
alone under no_grad, best of `reps`; batch * dim * N (the state elements one step updates) and L vary.
`--baseline REV` also times `selective_scan_fast` as it was at git revision REV of this repository,
loaded beside the current one. Prints a table and writes DIR/s6_cpu.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import time

import torch
import torch.nn.functional as F

from mambamixer.kernels.selective_scan import selective_scan_fast

#: (batch, dim, N): state elements per step from 256 to 65536.
SIZES = [(1, 16, 16), (1, 64, 16), (2, 64, 16), (4, 64, 16), (8, 64, 16), (32, 128, 16)]
LENGTHS = [64, 256, 1024, 4096]


def baseline_scan(rev):
    """`selective_scan_fast` from kernels/selective_scan/fast.py at git revision `rev`, as a module of the
    installed package (so its relative imports resolve)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(["git", "show", f"{rev}:kernels/selective_scan/fast.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    name = "mambamixer.kernels.selective_scan._fast_baseline"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    module.__package__ = "mambamixer.kernels.selective_scan"
    exec(compile(source, f"{rev}:kernels/selective_scan/fast.py", "exec"), module.__dict__)
    return module.selective_scan_fast


def per_step_loop(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """The reference: one loop iteration per step. Ungrouped B/C: (batch, N, L); out (batch, dim, L)."""
    dt = delta + delta_bias[:, None]
    dt = F.softplus(dt) if delta_softplus else dt
    decays = torch.exp(dt[..., None] * A[:, None]).unbind(2)  # L x (batch, dim, N)
    drives = ((dt * u)[..., None] * B.transpose(1, 2)[:, None]).unbind(2)
    Cs = C.transpose(1, 2)[:, None].unbind(2)
    h, ys = torch.zeros_like(decays[0]), []
    for decay, drive, c in zip(decays, drives, Cs):
        h = decay * h + drive
        ys.append((h * c).sum(-1))
    return (torch.stack(ys, -1) + u * D[:, None]) * F.silu(z)


def inputs(batch, dim, n, length):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=r(batch, dim, length), delta=r(batch, dim, length), A=-torch.rand(dim, n, generator=g) * n,
                B=r(batch, n, length), C=r(batch, n, length), D=r(dim), z=r(batch, dim, length),
                delta_bias=r(dim), delta_softplus=True)


def best_ms(scan, a, backward, reps):
    a = {k: v.clone().requires_grad_(backward) if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = scan(**a)
            if backward:
                out.sum().backward()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--baseline", help="git revision whose selective_scan_fast is timed as well")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scans = {"loop": per_step_loop, "fast": selective_scan_fast}
    if args.baseline:
        scans["baseline"] = baseline_scan(args.baseline)
    rows = []
    print(f"{'batch x dim x N':>16} {'L':>5} | " + " | ".join(
        " ".join(f"{f'{mode} {name}':>14}" for name in scans) + f" {'loop/fast':>9}" for mode in ("fwd+bwd", "fwd")))
    for batch, dim, n in SIZES:
        for length in LENGTHS:
            if batch * dim * n * length > 2**25:  # keep the slowest row under a few seconds
                continue
            a = inputs(batch, dim, n, length)
            row = dict(batch=batch, dim=dim, n=n, length=length, work=batch * dim * n)
            for key, backward in (("train", True), ("infer", False)):
                for name, scan in scans.items():
                    row[f"{key}_{name}_ms"] = best_ms(scan, a, backward, args.reps)
                row[f"{key}_ratio"] = row[f"{key}_loop_ms"] / row[f"{key}_fast_ms"]
                if args.baseline:
                    row[f"{key}_baseline_ratio"] = row[f"{key}_baseline_ms"] / row[f"{key}_fast_ms"]
            rows.append(row)
            print(f"{f'{batch} x {dim} x {n}':>16} {length:>5} | " + " | ".join(
                " ".join(f"{row[f'{key}_{name}_ms']:>14.1f}" for name in scans) + f" {row[f'{key}_ratio']:>9.2f}"
                for key in ("train", "infer")), flush=True)
    os.makedirs(args.out, exist_ok=True)
    meta = dict(torch=torch.__version__, threads=args.threads, reps=args.reps, cpu=platform.processor() or
                platform.machine(), cpus=os.cpu_count(), baseline=args.baseline)
    with open(os.path.join(args.out, "s6_cpu.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    print("loop/fast = per-step loop time / fast path time (> 1: fast path faster); wrote",
          os.path.join(args.out, "s6_cpu.json"))


if __name__ == "__main__":
    main()
