"""CPU benchmark of the fast PyTorch selective scan: the per-step loop against the chunked scan.

    python bench/s6_cpu.py --out DIR [--threads 2] [--reps 5]

Both paths of `selective_scan_fast` on the same float32 inputs (z, D, delta_bias, softplus; B/C shared),
forward + backward and forward alone under no_grad, best of `reps`; batch * dim * N (the state elements
one step updates) and L vary. Marks the path auto mode takes (`CHUNK_BELOW`). Prints a table and writes
DIR/s6_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from mambamixer.kernels.selective_scan import fast

#: (batch, dim, N): state elements per step from 256 to 65536.
SIZES = [(1, 16, 16), (1, 64, 16), (2, 64, 16), (4, 64, 16), (8, 64, 16), (32, 128, 16)]
LENGTHS = [64, 256, 1024, 4096]


def inputs(batch, dim, n, length):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=r(batch, dim, length), delta=r(batch, dim, length), A=-torch.rand(dim, n, generator=g) * n,
                B=r(batch, n, length), C=r(batch, n, length), D=r(dim), z=r(batch, dim, length),
                delta_bias=r(dim), delta_softplus=True)


def best_ms(a, chunked, backward, reps):
    a = {k: v.clone().requires_grad_(backward) if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = fast.selective_scan_fast(**a, chunked=chunked)
            if backward:
                out.sum().backward()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'batch x dim x N':>16} {'L':>5} | {'fwd+bwd loop':>12} {'chunked':>8} {'ratio':>6} | "
          f"{'fwd loop':>8} {'chunked':>8} {'ratio':>6} | auto")
    for batch, dim, n in SIZES:
        for length in LENGTHS:
            if batch * dim * n * length > 2**25:  # keep the slowest row under a few seconds
                continue
            a = inputs(batch, dim, n, length)
            row = dict(batch=batch, dim=dim, n=n, length=length, work=batch * dim * n,
                       auto="chunked" if batch * dim * n < fast.CHUNK_BELOW else "loop")
            for key, backward in (("train", True), ("infer", False)):
                row[f"{key}_loop_ms"] = best_ms(a, False, backward, args.reps)
                row[f"{key}_chunked_ms"] = best_ms(a, True, backward, args.reps)
                row[f"{key}_ratio"] = row[f"{key}_loop_ms"] / row[f"{key}_chunked_ms"]
            rows.append(row)
            print(f"{f'{batch} x {dim} x {n}':>16} {length:>5} | {row['train_loop_ms']:>12.1f} "
                  f"{row['train_chunked_ms']:>8.1f} {row['train_ratio']:>6.2f} | {row['infer_loop_ms']:>8.1f} "
                  f"{row['infer_chunked_ms']:>8.1f} {row['infer_ratio']:>6.2f} | {row['auto']}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    meta = dict(torch=torch.__version__, threads=args.threads, reps=args.reps, cpu=platform.processor() or
                platform.machine(), cpus=os.cpu_count(), chunk_below=fast.CHUNK_BELOW, chunk_work=fast.CHUNK_WORK)
    with open(os.path.join(args.out, "s6_cpu.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    print("ratio = loop time / chunked time (> 1: chunked faster); wrote", os.path.join(args.out, "s6_cpu.json"))


if __name__ == "__main__":
    main()
