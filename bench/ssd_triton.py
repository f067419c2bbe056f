"""GPU check and benchmark of the Triton SSD scan against mamba_ssm's Triton SSD, in one process.

    python bench/ssd_triton.py --ref REF_SRC --out DIR [--chunks 32,64] [--skip-checks]

REF_SRC holds the mamba_ssm sdist (`../shared/reference/`); its SSD ops are Triton only, so the sdist is
unpacked (package __init__ reduced to the version, as build_mamba_ssm_reference.py does) and imported
without building anything. Checks: float32 inputs against the float64 recurrence (forward, final state and
every gradient; both directions, grouped B/C, odd lengths, length 1, non-contiguous x), bfloat16 and
float16 inputs (forward and gradients), and, after the timings, torch.compile of an ssd layer. The timing table: bf16
x/B/C/z with D, dt_bias and softplus (as the mixers call it), median of `do_bench`, forward and
forward+backward, ours, our chunked PyTorch path and mamba_ssm's in the same run. Prints the table last and
writes DIR/ssd_triton.json after each stage.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tarfile
import time

import torch
import triton
from triton.testing import do_bench

from mambamixer.kernels import mamba_chunk_scan_combined, mamba_chunk_scan_ref
from mambamixer.mixer import SelectiveSSM

# (batch, L, H, P, G, N): vim2_tiny's first-stage token-mixer scan with ssm="ssd" (d_inner 192, headdim 64,
# N 16) at batch 64, and a Mamba-2 language-model layer (d_model 768, headdim 64, N 128). mamba_ssm autotunes
# its kernels on each new shape (minutes on a fresh machine), which keeps this list short.
SHAPES = [(64, 3136, 3, 64, 1, 16), (8, 2048, 24, 64, 1, 128)]
# (shape, chunk): length 1, an odd length over grouped B/C, many chunks at N 128, odd P and N in 16-step chunks.
CHECK_SHAPES = [((2, 1, 4, 64, 1, 16), 64), ((2, 257, 4, 64, 2, 64), 64), ((1, 1000, 8, 32, 1, 128), 64),
                ((3, 77, 6, 20, 3, 18), 16)]
checks, failures = [], []
T0 = time.time()


def rel(a, b) -> float:
    scale = b.double().norm()
    return ((a.double() - b.double()).norm() / (scale if scale > 0 else 1)).item()


def check(name, err, tol):
    ok = all(e < tol for e in (err.values() if isinstance(err, dict) else [err]))
    checks.append(dict(name=name, err=err, tol=tol, ok=ok))
    (failures.append if not ok else (lambda _: None))(name)
    shown = {k: f"{v:.1e}" for k, v in err.items()} if isinstance(err, dict) else f"{err:.1e}"
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {shown} (tol {tol:.0e}) at {time.time() - T0:.0f} s", flush=True)


def inputs(batch, length, heads, p, groups, n, dtype=torch.float64, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, device="cuda", dtype=torch.float64)

    a = dict(x=randn(batch, length, heads, p), dt=randn(batch, length, heads, scale=0.5),
             A=-(0.5 + torch.rand(heads, generator=g, device="cuda", dtype=torch.float64)),
             B=randn(batch, length, groups, n, scale=n ** -0.5), C=randn(batch, length, groups, n, scale=n ** -0.5),
             D=randn(heads), z=randn(batch, length, heads, p), dt_bias=randn(heads, scale=0.5),
             initial_states=randn(batch, heads, p, n))
    keep = {"A", "D", "dt_bias", "initial_states"}
    return {k: v.to(torch.float32 if k in keep else dtype) for k, v in a.items()}


def gradients(out, args, seed=1):
    w = torch.randn(out.shape, generator=torch.Generator(device="cuda").manual_seed(seed), device="cuda",
                    dtype=torch.float64)
    names = [k for k, v in args.items() if v.requires_grad]
    return dict(zip(names, torch.autograd.grad((out.double() * w).sum(), [args[k] for k in names])))


def leaves(a):
    return {k: v.detach().clone().requires_grad_(True) for k, v in a.items()}


def run_checks():
    for shape, chunk in CHECK_SHAPES:
        for reverse in (False, True):
            a = inputs(*shape, dtype=torch.float32, seed=shape[1])
            tri, ref = leaves(a), leaves({k: v.double() for k, v in a.items()})
            out, last = mamba_chunk_scan_combined(**tri, chunk_size=chunk, dt_softplus=True, reverse=reverse,
                                                  return_final_states=True, backend="triton")
            r, r_last = mamba_chunk_scan_ref(**ref, dt_softplus=True, reverse=reverse, return_final_states=True)
            g, g_ref = gradients(out, tri), gradients(r, ref)
            errs = dict(out=rel(out, r), last=rel(last, r_last), **{k: rel(g[k], g_ref[k]) for k in g})
            check(f"float32 {shape} chunk {chunk} reverse={reverse}", errs, 5e-5)
    # Non-contiguous x, z, B, C, as a layer's (batch, dim, L) tensors arrive.
    a = inputs(2, 300, 4, 32, 2, 16, dtype=torch.float32, seed=3)
    views = {k: v.transpose(1, -1).contiguous().transpose(1, -1) if k in ("x", "z", "B", "C") else v
             for k, v in a.items()}
    check("float32 non-contiguous", rel(mamba_chunk_scan_combined(**views, chunk_size=64, dt_softplus=True),
                                        mamba_chunk_scan_ref(**{k: v.double() for k, v in a.items()},
                                                             dt_softplus=True)), 5e-5)
    # bf16 and fp16 x, B, C, z (16-bit products): forward and gradients against float64 on the same rounded inputs.
    for (shape, chunk), (dtype, tol) in itertools.product(CHECK_SHAPES[1:3], ((torch.bfloat16, 2e-2),
                                                                              (torch.float16, 5e-3))):
        a = inputs(*shape, dtype=dtype, seed=4)
        ref = leaves({k: v.double() for k, v in a.items()})
        r = mamba_chunk_scan_ref(**ref, dt_softplus=True)
        g_ref = gradients(r, ref)
        t = leaves(a)
        out = mamba_chunk_scan_combined(**t, chunk_size=chunk, dt_softplus=True, backend="triton")
        g = gradients(out, t)
        check(f"{str(dtype)[6:]} {shape}", dict(out=rel(out, r), **{k: rel(g[k], g_ref[k]) for k in g}), tol)


def compile_check():
    # torch.compile of a bidirectional ssd layer, forward and backward, against eager.
    torch.manual_seed(0)
    layer = SelectiveSSM(64, d_state=16, ssm="ssd", headdim=32, bidirectional=True).cuda()
    x = torch.randn(4, 300, 64, device="cuda")
    eager = layer(x)
    g_eager = torch.autograd.grad(eager.sum(), list(layer.parameters()))
    compiled = torch.compile(layer)(x)
    g_comp = torch.autograd.grad(compiled.sum(), list(layer.parameters()))
    check("torch.compile ssd layer", dict(out=rel(compiled, eager), grads=max(map(rel, g_comp, g_eager))), 1e-5)


def time_op(fn, a, chunk):
    """Median ms of the forward (no grad) and of forward+backward of fn on the arguments `a`."""
    t = leaves(a)
    dout = torch.randn(a["x"].shape, device="cuda", dtype=a["x"].dtype)
    with torch.no_grad():
        fwd = do_bench(lambda: fn(**a, chunk_size=chunk, dt_softplus=True), return_mode="median")
    fwd_bwd = do_bench(lambda: torch.autograd.grad(fn(**t, chunk_size=chunk, dt_softplus=True), list(t.values()),
                                                   dout), return_mode="median")
    return fwd, fwd_bwd


def timings(mamba, chunk):
    fns = (("ours", lambda **k: mamba_chunk_scan_combined(**k, backend="triton")),
           ("torch", lambda **k: mamba_chunk_scan_combined(**k, backend="torch")), ("mamba_ssm", mamba))
    rows = []
    for shape in SHAPES:
        a = inputs(*shape, dtype=torch.bfloat16)
        a.pop("initial_states")
        row = dict(shape=shape, chunk=chunk)
        with torch.no_grad():  # bf16 outputs of ours and of the PyTorch path (float32 inside) agree
            row["ours_vs_torch"] = rel(fns[0][1](**a, chunk_size=chunk, dt_softplus=True),
                                       fns[1][1](**a, chunk_size=chunk, dt_softplus=True))
        for name, fn in fns:
            try:
                row[f"{name}_fwd"], row[f"{name}_fwd_bwd"] = time_op(fn, a, chunk)
            except torch.OutOfMemoryError:
                row[f"{name}_fwd"] = row[f"{name}_fwd_bwd"] = None
            torch.cuda.empty_cache()
            print(f"{shape} {name} at {time.time() - T0:.0f} s", flush=True)
        rows.append(row)
        print(row, flush=True)
    return rows


def table_row(r):
    def ms(key):
        return "-" if r[key] is None else f"{r[key]:.3f}"

    def ratio(key):
        ours, ref = r[f"ours_{key}"], r[f"mamba_ssm_{key}"]
        return "-" if ours is None or ref is None else f"{ours / ref:.2f}x"

    return (f"| {tuple(r['shape'])} | {r['chunk']} | {ms('mamba_ssm_fwd')} / {ms('mamba_ssm_fwd_bwd')} "
            f"| {ms('ours_fwd')} / {ms('ours_fwd_bwd')} | {ratio('fwd')}, {ratio('fwd_bwd')} "
            f"| {ms('torch_fwd')} / {ms('torch_fwd_bwd')} |")


def load_reference(src):
    dest = "/tmp/mamba_ref_ssd"
    with tarfile.open(os.path.join(src, "mamba_ssm-2.3.2.post1.tar.gz")) as tar:
        tar.extractall(dest, filter="data")
    root = os.path.join(dest, "mamba_ssm-2.3.2.post1")
    with open(os.path.join(root, "mamba_ssm", "__init__.py"), "w") as f:
        f.write('__version__ = "2.3.2.post1"\n')
    sys.path.insert(0, root)
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as ref_fn
    return ref_fn


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ref", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--chunks", type=lambda s: [int(v) for v in s.split(",")], default=[64])
    p.add_argument("--skip-checks", action="store_true")
    args = p.parse_args()
    mamba = load_reference(args.ref)
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__)
    out = os.path.join(args.out, "ssd_triton.json")
    os.makedirs(args.out, exist_ok=True)

    def save():
        with open(out, "w") as f:
            json.dump(result, f, indent=1)

    if not args.skip_checks:
        run_checks()
        result["checks"] = checks
        print(f"checks: {len(checks) - len(failures)}/{len(checks)} passed", flush=True)
        save()
    result["timings"] = [row for chunk in args.chunks for row in timings(mamba, chunk)]
    save()
    if not args.skip_checks:
        compile_check()
        save()
    print("\n| shape (batch, L, H, P, G, N) | chunk | mamba_ssm fwd / fwd+bwd ms | ours fwd / fwd+bwd ms "
          "| ours / mamba_ssm fwd, fwd+bwd | torch path fwd / fwd+bwd ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in result["timings"]:
        print(table_row(r))
    if failures:
        raise SystemExit(f"failed checks: {failures}")


if __name__ == "__main__":
    main()
