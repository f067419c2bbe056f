"""ViM2's channel-mixer scan on CUDA: delta/B/C projected inside the Triton kernels (PROJ) against the
explicit path (delta, B, C formed by PyTorch, then the generic fused bidirectional kernel), same process.

    python bench/channel_mixer.py --out DIR [--sweep]

Checks first (float32, against the float64 PyTorch path): the op's output and every gradient, and the
`ChannelWiseSelectiveMixer` layer on both backends. Then times `selective_scan_projected_bidirectional_fn`
at vim2_tiny's four stage shapes (batch 64, 224 px: tokens x channels 3136 x 96 ... 49 x 768; e = 2,
N = 16), u and z in bf16 under bf16 autocast as in training, forward and forward+backward (gradients of u,
z and every weight), both paths, median of `do_bench_cudagraph`. Prints a table and writes
DIR/channel_mixer.json. --sweep instead times the projected op alone for each count of token groups per
program at each shape, then the launcher's pick at each CHUNK (steps between saved states), and writes
DIR/channel_mixer_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import triton
from triton.testing import do_bench_cudagraph

from mambamixer.kernels import selective_scan_bidirectional_fn, selective_scan_projected_bidirectional_fn
from mambamixer.kernels.selective_scan import triton_op
from mambamixer.kernels.selective_scan.projected import _explicit
from mambamixer.mixer import ChannelWiseSelectiveMixer

NAMES = ("u", "A", "x_weight", "dt_weight", "dt_bias", "D")
SHAPES = [(64, 3136, 96), (64, 784, 192), (64, 196, 384), (64, 49, 768)]
CHUNKS = [16, 32]
SWEEP = [4, 8, 16, 32]


def direction(batch, tokens, channels, e, n, dtype, g):
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    dt = torch.exp(torch.rand(e, device="cuda", generator=g) * 4.6 - 6.9)  # log-uniform in [1e-3, 0.1]
    A = -torch.arange(1, n + 1, device="cuda").float().repeat(e, 1)
    return dict(u=r(batch, tokens * e, channels).to(dtype), A=A, x_weight=r(1 + 2 * n, e) / 2, dt_weight=r(e),
                dt_bias=dt + torch.log(-torch.expm1(-dt)), D=r(e))


def projected(pair, z):
    return selective_scan_projected_bidirectional_fn(*[(pair[0][k], pair[1][k]) for k in NAMES], z=z)


def explicit(pair, z):
    return selective_scan_bidirectional_fn(*zip(*[_explicit(*[d[k] for k in NAMES]) for d in pair]), z=z,
                                           delta_softplus=True)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def checks():
    results = []
    g = torch.Generator(device="cuda").manual_seed(0)
    pair = [direction(2, 37, 40, 2, 16, torch.float32, g) for _ in range(2)]
    z = torch.randn(2, 74, 40, device="cuda")
    leaves = [d[k].requires_grad_(True) for d in pair for k in NAMES] + [z.requires_grad_(True)]
    dout = torch.randn_like(z)
    out = projected(pair, z)
    grads = torch.autograd.grad(out, leaves, dout)
    exact = [{k: v.detach().double().requires_grad_(True) for k, v in d.items()} for d in pair]
    z64 = z.detach().double().requires_grad_(True)
    ref = selective_scan_projected_bidirectional_fn(*[(exact[0][k], exact[1][k]) for k in NAMES], z=z64,
                                                    backend="torch")
    ref_grads = torch.autograd.grad(ref, [d[k] for d in exact for k in NAMES] + [z64], dout.double())
    names = [f"d{k}{i}" for i in (0, 1) for k in NAMES] + ["dz"]
    errors = {"out": rel(out, ref), **{n: rel(a, b) for n, a, b in zip(names, grads, ref_grads)}}
    results.append(dict(name="op float32 vs float64", worst=max(errors.values()), **errors))
    torch.manual_seed(1)
    layers = {b: ChannelWiseSelectiveMixer(96, backend=b).cuda() for b in ("torch", "triton")}
    layers["triton"].load_state_dict(layers["torch"].state_dict())
    x = torch.randn(4, 14, 14, 96, device="cuda")
    ys = {b: m(x) for b, m in layers.items()}
    for y in ys.values():
        y.square().sum().backward()
    errors = {"out": rel(ys["triton"], ys["torch"])}
    for (name, p), q in zip(layers["torch"].named_parameters(), layers["triton"].parameters()):
        errors["d" + name] = rel(q.grad, p.grad)
    results.append(dict(name="ChannelWiseSelectiveMixer triton vs torch float32", worst=max(errors.values()),
                        **errors))
    for r in results:
        r["ok"] = r["worst"] < 1e-4
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['name']}: worst rel. error {r['worst']:.1e}", flush=True)
    return results


def timers(batch, tokens, channels):
    """{path: (forward, forward+backward)} closures over bf16 inputs at one shape."""
    g = torch.Generator(device="cuda").manual_seed(2)
    pair = [direction(batch, tokens, channels, 2, 16, torch.bfloat16, g) for _ in range(2)]
    z = torch.randn(batch, tokens * 2, channels, device="cuda", dtype=torch.bfloat16)
    leaves = [d[k].requires_grad_(True) for d in pair for k in NAMES] + [z.requires_grad_(True)]
    dout = torch.randn_like(z)
    out = {}
    for name, fn in (("projected", projected), ("explicit", explicit)):
        def fwd(fn=fn):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return fn(pair, z)

        def both(fwd=fwd):
            torch.autograd.grad(fwd(), leaves, dout)

        out[name] = (fwd, both)
    return out


def bench(fn):
    return do_bench_cudagraph(fn, rep=50, return_mode="median")


def time_shape(batch, tokens, channels):
    row = dict(batch=batch, tokens=tokens, channels=channels)
    for name, (fwd, both) in timers(batch, tokens, channels).items():
        row[f"{name}_fwd_ms"] = bench(fwd)
        row[f"{name}_fwd_bwd_ms"] = bench(both)
    row["fwd_ratio"] = row["projected_fwd_ms"] / row["explicit_fwd_ms"]
    row["fwd_bwd_ratio"] = row["projected_fwd_bwd_ms"] / row["explicit_fwd_bwd_ms"]
    return row


def sweep(out_dir):
    """Forward and forward+backward ms of the projected op per (groups per program) and shape, the same
    count for both kernels; the launcher's pick (`PROJ_GROUPS`) at each CHUNK last."""
    picked, chunk = triton_op.PROJ_GROUPS, triton_op.PROJ_CHUNK
    rows = []
    print("| batch, tokens, channels | groups per program | fwd ms | fwd+bwd ms |")
    for shape in SHAPES:
        fwd, both = timers(*shape)["projected"]
        for groups, steps in [*((g, chunk) for g in SWEEP), *((picked, c) for c in CHUNKS)]:
            triton_op.PROJ_GROUPS, triton_op.PROJ_CHUNK = groups, steps
            row = dict(shape=shape, groups=groups, chunk=steps, fwd_ms=bench(fwd), fwd_bwd_ms=bench(both))
            rows.append(row)
            print(f"| {shape} | {groups}, CHUNK {steps} | {row['fwd_ms']:.3f} | {row['fwd_bwd_ms']:.3f} |", flush=True)
        triton_op.PROJ_GROUPS, triton_op.PROJ_CHUNK = picked, chunk
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__, rows=rows)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "channel_mixer_sweep.json"), "w") as f:
        json.dump(result, f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    if args.sweep:
        return sweep(args.out)
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  checks=checks(), rows=[])
    print("| batch, tokens, channels | explicit fwd / fwd+bwd ms | projected fwd / fwd+bwd ms | ratio fwd / fwd+bwd |")
    for shape in SHAPES:
        row = time_shape(*shape)
        result["rows"].append(row)
        print(f"| {shape} | {row['explicit_fwd_ms']:.3f} / {row['explicit_fwd_bwd_ms']:.3f} | "
              f"{row['projected_fwd_ms']:.3f} / {row['projected_fwd_bwd_ms']:.3f} | "
              f"{row['fwd_ratio']:.2f} / {row['fwd_bwd_ratio']:.2f} |", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "channel_mixer.json"), "w") as f:
        json.dump(result, f, indent=1)
    if not all(c["ok"] for c in result["checks"]):
        raise SystemExit("a check failed")


if __name__ == "__main__":
    main()
