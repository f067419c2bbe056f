"""ViM2's channel-mixer scan on CUDA: delta/B/C projected inside the Triton kernels (PROJ) against the
explicit path (delta, B, C formed by PyTorch, then the generic fused bidirectional kernel), same process.

    python bench/channel_mixer.py --out DIR [--sweep | --layouts]

Checks first (float32, against the float64 PyTorch path): the op with the layer's 4-tap convs, u and z in
both layouts (below), output and every gradient, and the `ChannelWiseSelectiveMixer` layer on both
backends. Then times `selective_scan_projected_bidirectional_fn` at vim2_tiny's four stage shapes (batch 64,
224 px: tokens x channels 3136 x 96 ... 49 x 768; e = 2, N = 16), u and z contiguous in bf16 under bf16
autocast as in training, forward and forward+backward (gradients of u, z and every weight), both paths,
median of `do_bench_cudagraph`. Prints a table and writes DIR/channel_mixer.json. --sweep instead times the
projected op alone for each count of token groups per program at each shape, then the launcher's pick at
each CHUNK (steps between saved states), and writes DIR/channel_mixer_sweep.json. --layouts instead times
the op with the layer's 4-tap convs at the training batch 256 with u and z stored as before (contiguous
(batch, tokens * e, channels): a channel step's loads one element per token, `channels` apart) and as the
layer now passes them (stored (batch, channels, tokens * e): one contiguous run per step), after the
float64 checks of both, and writes DIR/channel_mixer_layouts.json.
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
CONV_NAMES = ("conv_weight", "conv_bias")
LAYOUTS = ("channels", "tokens")
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


def tokens_major(t):
    """t (batch, X, L) stored as (batch, L, X), the layout `ChannelWiseSelectiveMixer` passes u and z in."""
    return t.mT.contiguous().mT


def with_conv(batch, tokens, channels, dtype, g, layout):
    """A direction pair as the channel mixer passes it: one u for both directions, each with a 4-tap conv
    (weights in `CONV_NAMES`), z; u and z in `layout` ("channels": contiguous (batch, groups * e, L);
    "tokens": stored (batch, L, groups * e))."""
    pair = [direction(batch, tokens, channels, 2, 16, dtype, g) for _ in range(2)]
    for d in pair:
        d.update(conv_weight=torch.randn(2, 4, device="cuda", generator=g) / 2,
                 conv_bias=torch.randn(2, device="cuda", generator=g) / 3)
    z = torch.randn(batch, tokens * 2, channels, device="cuda", generator=g).to(dtype)
    if layout == "tokens":
        pair[0]["u"], z = tokens_major(pair[0]["u"]), tokens_major(z)
    pair[1]["u"] = pair[0]["u"]
    return pair, z


def projected_with_conv(pair, z, **kw):
    return selective_scan_projected_bidirectional_fn(*[(pair[0][k], pair[1][k]) for k in NAMES], z=z,
                                                     **{k: (pair[0][k], pair[1][k]) for k in CONV_NAMES}, **kw)


def pair_leaves(pair, z):
    """The distinct tensors of a pair (u once) and z, as leaves requiring grad, with their names."""
    named = [(f"d{k}{i}", d[k]) for i, d in enumerate(pair) for k in (*NAMES, *CONV_NAMES) if i == 0 or k != "u"]
    named.append(("dz", z))
    for _, t in named:
        t.requires_grad_(True)
    return named


def checks():
    results = []
    for layout in LAYOUTS:
        g = torch.Generator(device="cuda").manual_seed(0)
        pair, z = with_conv(2, 37, 40, torch.float32, g, layout)
        named = pair_leaves(pair, z)
        dout = torch.randn(z.shape, device="cuda", generator=g)
        out = projected_with_conv(pair, z)
        grads = torch.autograd.grad(out, [t for _, t in named], dout)
        exact = [{k: v.detach().double() for k, v in d.items()} for d in pair]
        exact[1]["u"] = exact[0]["u"]
        z64 = z.detach().double()
        exact_named = pair_leaves(exact, z64)
        ref = projected_with_conv(exact, z64, backend="torch")
        ref_grads = torch.autograd.grad(ref, [t for _, t in exact_named], dout.double())
        errors = {"out": rel(out, ref), **{n: rel(a, b) for (n, _), a, b in zip(named, grads, ref_grads)}}
        errors["layout_changed"] = float(out.stride() != pair[0]["u"].stride())  # 1 fails the check
        results.append(dict(name=f"op with conv, u and z {layout}-major, float32 vs float64",
                            worst=max(errors.values()), **errors))
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


def time_layouts(batch, tokens, channels):
    """Forward and forward+backward ms of the op with the conv (every gradient), bf16 under autocast, u and
    z in each layout."""
    row = dict(batch=batch, tokens=tokens, channels=channels)
    for layout in LAYOUTS:
        pair, z = with_conv(batch, tokens, channels, torch.bfloat16, torch.Generator(device="cuda").manual_seed(2),
                            layout)
        leaves = [t for _, t in pair_leaves(pair, z)]
        dout = torch.randn_like(z)

        def fwd(pair=pair, z=z):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return projected_with_conv(pair, z)

        def both(fwd=fwd, leaves=leaves, dout=dout):
            torch.autograd.grad(fwd(), leaves, dout)

        row[f"{layout}_fwd_ms"] = bench(fwd)
        row[f"{layout}_fwd_bwd_ms"] = bench(both)
    row["fwd_ratio"] = row["tokens_fwd_ms"] / row["channels_fwd_ms"]
    row["fwd_bwd_ratio"] = row["tokens_fwd_bwd_ms"] / row["channels_fwd_bwd_ms"]
    return row


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
    picked, chunk = triton_op.PROJ_GROUPS, triton_op.CHUNK
    rows = []
    print("| batch, tokens, channels | groups per program | fwd ms | fwd+bwd ms |")
    for shape in SHAPES:
        fwd, both = timers(*shape)["projected"]
        for groups, steps in [*((g, chunk) for g in SWEEP), *((picked, c) for c in CHUNKS)]:
            triton_op.PROJ_GROUPS, triton_op.CHUNK = groups, steps
            row = dict(shape=shape, groups=groups, chunk=steps, fwd_ms=bench(fwd), fwd_bwd_ms=bench(both))
            rows.append(row)
            print(f"| {shape} | {groups}, CHUNK {steps} | {row['fwd_ms']:.3f} | {row['fwd_bwd_ms']:.3f} |", flush=True)
        triton_op.PROJ_GROUPS, triton_op.CHUNK = picked, chunk
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__, rows=rows)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "channel_mixer_sweep.json"), "w") as f:
        json.dump(result, f, indent=1)


def layouts(out_dir):
    """The op with the conv in both layouts at the training batch (256) of vim2_tiny's stages, after the
    float64 checks of both."""
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  checks=checks(), rows=[])
    print("| batch, tokens, channels | channels-major fwd / fwd+bwd ms | tokens-major fwd / fwd+bwd ms | ratio |")
    for _, tokens, channels in SHAPES:
        row = time_layouts(256, tokens, channels)
        result["rows"].append(row)
        print(f"| 256, {tokens}, {channels} | {row['channels_fwd_ms']:.3f} / {row['channels_fwd_bwd_ms']:.3f} | "
              f"{row['tokens_fwd_ms']:.3f} / {row['tokens_fwd_bwd_ms']:.3f} | "
              f"{row['fwd_ratio']:.2f} / {row['fwd_bwd_ratio']:.2f} |", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "channel_mixer_layouts.json"), "w") as f:
        json.dump(result, f, indent=1)
    if not all(c["ok"] for c in result["checks"]):
        raise SystemExit("a check failed")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--layouts", action="store_true")
    args = parser.parse_args()
    if args.sweep:
        return sweep(args.out)
    if args.layouts:
        return layouts(args.out)
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
