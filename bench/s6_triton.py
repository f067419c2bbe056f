"""GPU check and benchmark of the Triton selective scan against mamba_ssm's CUDA kernel, in one process.

    python bench/s6_triton.py (--ref REF_SRC | --mamba BUILT) --out DIR [--sweep] [--segments]

REF_SRC holds `build_mamba_ssm_reference.py` and the mamba_ssm sdist (`../shared/reference/`); the
reference is built into /tmp/mamba_ref in the background while the checks run. BUILT: a reference that
script built already (its DEST). Checks: float32 inputs
against the float64 recurrence (forward and every gradient, both directions, grouped B/C, odd lengths,
the fused bidirectional op, torch.compile), bfloat16 inputs next to mamba_ssm's error on the same inputs.
Then the timing table: bf16 inputs with z, D, delta_bias and softplus, median of `do_bench`, each row's
mamba_ssm time measured in the same run, with the memory floor (inputs read and outputs written once at
the device's copy bandwidth) as a fraction of each time; `--sweep` first times every block configuration per
shape, `--segments` every segment count per long shape.
Prints tables last and writes DIR/s6_triton.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

from mambamixer.kernels import selective_scan_fn
from mambamixer.kernels.selective_scan import selective_scan_bidirectional_fn, selective_scan_fast, triton_op

SHAPES = [(64, 384, 197, 16), (64, 768, 197, 16), (8, 1536, 4096, 16), (2, 1536, 16384, 16), (256, 256, 21, 16)]
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
checks, failures = [], []


def rel(a, b) -> float:
    """||a - b|| / ||b||, or ||a - b|| where b is exactly zero."""
    scale = b.double().norm()
    return ((a.double() - b.double()).norm() / (scale if scale > 0 else 1)).item()


def inputs(batch, dim, length, n, dtype, groups=None, seed=0):
    """Mamba-like inputs: delta_bias from dt log-uniform in [1e-3, 0.1], S4D-real A (its channels adjacent, as
    the layers store it), unit-scale the rest."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, device="cuda", generator=g)

    bc = (batch, n, length) if groups is None else (batch, groups, n, length)
    dt = torch.exp(torch.rand(dim, device="cuda", generator=g) * (torch.log(torch.tensor(100.0))) + torch.log(
        torch.tensor(1e-3)))
    return dict(u=randn(batch, dim, length).to(dtype), delta=(0.5 * randn(batch, dim, length)).to(dtype),
                A=-torch.arange(1, n + 1, device="cuda", dtype=torch.float32).repeat(dim, 1).t().contiguous().t(),
                B=randn(*bc).to(dtype), C=randn(*bc).to(dtype), D=randn(dim), z=randn(batch, dim, length).to(dtype),
                delta_bias=dt + torch.log(-torch.expm1(-dt)))


def check(name, errors: dict, tol):
    """errors: relative errors (an absolute one where the exact value is zero, e.g. dA at L = 1)."""
    worst = max(errors.values())
    ok = worst <= tol and all(e == e for e in errors.values())
    checks.append(dict(name=name, tol=tol, **{k: float(v) for k, v in errors.items()}))
    if not ok:
        failures.append(name)
    detail = " ".join(f"{k}={v:.1e}" for k, v in errors.items())
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)


def grads_of(fn, args, dout):
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in args.items() if isinstance(v, torch.Tensor)}
    out = fn(**{**args, **leaves})
    grads = torch.autograd.grad(out, list(leaves.values()), dout.to(out.dtype))
    return out, dict(zip(leaves, grads))


def exact(args):
    return {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def run_checks():
    # Shapes up to L = 4096 (the float64 reference at L = 16384 needs tens of GB); (2, 64, 1000, 16) and the
    # two longest shapes run split into segments.
    cases = [(s, None, False) for s in SHAPES if s[2] <= 4096] + [
        ((4, 64, 129, 16), 2, True), ((4, 64, 1, 16), None, True), ((2, 48, 300, 7), 3, False),
        ((2, 64, 1000, 16), 2, True)]
    for (batch, dim, length, n), groups, reverse in cases:
        a = inputs(batch, dim, length, n, torch.float32, groups, seed=length)
        a["delta_softplus"] = True
        dout = torch.randn(batch, dim, length, device="cuda")
        a["reverse"] = reverse
        out, g = grads_of(lambda **k: selective_scan_fn(**k, backend="triton"), a, dout)
        ref, gr = grads_of(lambda **k: selective_scan_fast(**k), exact(a), dout)
        errs = {"out": rel(out, ref), **{f"d{k}": rel(g[k], gr[k]) for k in g}}
        check(f"float32 {(batch, dim, length, n)} groups={groups} reverse={reverse}", errs, 1e-5)
    # bf16: ours and mamba_ssm's forward error on the same rounded inputs (mamba_ssm scans first-to-last only).
    for shape in SHAPES:
        a = inputs(*shape, torch.bfloat16, seed=1)
        ref = selective_scan_fast(**exact(a), delta_softplus=True)
        errs = {"ours": rel(selective_scan_fn(**a, delta_softplus=True, backend="triton"), ref)}
        if mamba is not None:
            errs["mamba_ssm"] = rel(mamba(**a, delta_softplus=True), ref)
        check(f"bf16 forward {shape}", errs, max(errs.get("mamba_ssm", 3e-3) * 1.1, 3e-3))
    # Fused bidirectional: float32 against two float64 scans, with gradients; in one launch, and split into
    # segments (one launch per direction).
    for shape in ((8, 192, 197, 16), (2, 192, 1000, 16)):
        check_bidirectional(*shape)
    # torch.compile traces through the custom ops.
    a = inputs(4, 64, 129, 16, torch.float32, seed=9)
    dout = torch.randn(4, 64, 129, device="cuda")
    compiled = torch.compile(lambda **k: selective_scan_fn(**k, delta_softplus=True, backend="triton"), fullgraph=True)
    out, g = grads_of(compiled, a, dout)
    ref, gr = grads_of(lambda **k: selective_scan_fast(**k, delta_softplus=True), exact(a), dout)
    check("torch.compile(fullgraph) float32", {"out": rel(out, ref), **{f"d{k}": rel(g[k], gr[k]) for k in g}}, 1e-5)


def check_bidirectional(batch, dim, length, n):
    f, b = inputs(batch, dim, length, n, torch.float32, seed=5), inputs(batch, dim, length, n, torch.float32, 2, 6)
    z = f.pop("z")
    b.pop("z")
    dout = torch.randn(batch, dim, length, device="cuda")

    def bidir(backend):
        def fn(**k):
            pairs = [(k[name + "0"], k[name + "1"]) for name in ("u", "delta", "A", "B", "C", "D", "delta_bias")]
            return selective_scan_bidirectional_fn(*pairs, z=k["z"], delta_softplus=True, backend=backend)
        return fn

    args = {**{k + "0": v for k, v in f.items()}, **{k + "1": v for k, v in b.items()}, "z": z}
    out, g = grads_of(bidir("triton"), args, dout)
    ref, gr = grads_of(bidir("torch"), exact(args), dout)
    check(f"float32 fused bidirectional {(batch, dim, length, n)}", {"out": rel(out, ref), **{
        f"d{k}": rel(g[k], gr[k]) for k in g}}, 1e-5)


def fwd_bwd(fn, args, dout):
    leaves = [v for v in args.values() if isinstance(v, torch.Tensor) and v.requires_grad]

    def step():
        torch.autograd.grad(fn(**args), leaves, dout)
    return step


def floor_bytes(batch, dim, length, n, elt=2):
    """Inputs read once and outputs written once: u, delta, z, B, C in, out out (fwd); plus dout in and
    du, ddelta, dz, dB, dC out (bwd)."""
    seq, bc = batch * dim * length, batch * n * length
    fwd = (4 * seq + 2 * bc) * elt  # 3 (batch, dim, L) + B, C read; out written
    bwd = (4 * seq + 2 * bc) * elt + (3 * seq + 2 * bc) * elt  # u, delta, z, dout, B, C read; 5 gradients written
    return fwd, fwd + bwd


def timed(fn, args, dout, eager=True):
    """Median ms of forward and of forward+backward: do_bench (with the Python call overhead, as training
    sees it; None unless eager) and do_bench_cudagraph (replayed CUDA graph: device time alone)."""
    fwd = both = None
    if eager:
        fwd = do_bench(lambda: fn(**args), warmup=25, rep=200, return_mode="median")
        both = do_bench(fwd_bwd(fn, args, dout), warmup=25, rep=200, return_mode="median")
    fwd_graph = do_bench_cudagraph(lambda: fn(**args), rep=100, return_mode="median")
    both_graph = do_bench_cudagraph(fwd_bwd(fn, args, dout), rep=100, return_mode="median")
    return fwd, both, fwd_graph, both_graph


def with_grad(a):
    return {k: v.requires_grad_(True) if isinstance(v, torch.Tensor) else v for k, v in a.items()}


def sweep(results):
    configs = [(4, 32, 1), (8, 32, 1), (16, 32, 1), (8, 32, 2), (16, 32, 2), (32, 32, 2), (32, 32, 4), (8, 16, 1),
               (8, 64, 1), (16, 64, 2)]
    default = triton_op.block_sizes
    for shape in SHAPES:
        a = with_grad(inputs(*shape, torch.bfloat16, seed=2))
        a["delta_softplus"] = True
        dout = torch.randn(shape[0], shape[1], shape[2], device="cuda", dtype=torch.bfloat16)
        rows = []
        for bd, chunk, w in configs:
            triton_op.block_sizes = lambda dim, length, n, dpgs, c=(bd, chunk, w): (
                c[0], triton.next_power_of_2(n), c[1], c[2])
            try:
                f, fb = timed(lambda **k: selective_scan_fn(**k, backend="triton"), a, dout)
            except Exception as err:  # a configuration the compiler rejects (e.g. out of resources)
                print(f"sweep {shape} {bd, chunk, w}: {type(err).__name__}", flush=True)
                continue
            rows.append(dict(block_d=bd, chunk=chunk, warps=w, fwd_ms=f, fwd_bwd_ms=fb))
            print(f"sweep {shape} BD={bd} CHUNK={chunk} warps={w}: fwd {f:.3f} ms  fwd+bwd {fb:.3f} ms", flush=True)
        triton_op.block_sizes = default
        results[str(shape)] = rows
        best_f = min(rows, key=lambda r: r["fwd_ms"])
        best_fb = min(rows, key=lambda r: r["fwd_bwd_ms"])
        print(f"BEST {shape} fwd {best_f}\nBEST {shape} fwd+bwd {best_fb}", flush=True)


def forced_segments(split):
    """A stand-in for `triton_op.segments` that cuts every scan into `split` segments (fewer if too short)."""
    def segments(programs, length, chunk, device):
        chunks = triton.cdiv(length, chunk)
        per = triton.cdiv(chunks, min(split, chunks))
        return triton.cdiv(chunks, per), per * chunk
    return segments


def picked_segments(shape):
    """(n_segs, seg_len) that `triton_op.segments` picks for a single-direction scan of this shape."""
    batch, dim, length, n = shape
    block_d, _, chunk, _ = triton_op.block_sizes(dim, length, n, ())
    return triton_op.segments(batch * triton.cdiv(dim, block_d), length, chunk, torch.device("cuda"))


def segment_sweep():
    """Graph-replay ms of forward and forward+backward per forced segment count, and the count `segments`
    picks, at the shapes long enough to split."""
    default, rows = triton_op.segments, []
    for shape in SHAPES:
        batch, dim, length, n = shape
        if length < 2 * triton_op.CHUNK * triton_op.MIN_SEGMENT_CHUNKS:
            continue
        a = with_grad(inputs(*shape, torch.bfloat16, seed=2))
        a["delta_softplus"] = True
        dout = torch.randn(batch, dim, length, device="cuda", dtype=torch.bfloat16)
        picked = picked_segments(shape)[0]
        for split in (1, 2, 4, 8, 16, 32, 64):
            triton_op.segments = forced_segments(split)
            try:
                _, _, f, fb = timed(lambda **k: selective_scan_fn(**k, backend="triton"), a, dout, eager=False)
            finally:
                triton_op.segments = default
            rows.append(dict(shape=shape, segments=split, picked=picked, fwd_ms=f, fwd_bwd_ms=fb))
            print(f"segments {shape} {split}{' (picked)' if split == picked else ''}: fwd {f:.3f} ms  "
                  f"fwd+bwd {fb:.3f} ms", flush=True)
    return rows


def benchmark():
    bw = copy_bandwidth()
    rows = []
    for shape in SHAPES:
        batch, dim, length, n = shape
        a = with_grad(inputs(*shape, torch.bfloat16, seed=3))
        a["delta_softplus"] = True
        dout = torch.randn(batch, dim, length, device="cuda", dtype=torch.bfloat16)
        ours = timed(lambda **k: selective_scan_fn(**k, backend="triton"), a, dout)
        ref = timed(mamba, a, dout)
        floor = floor_bytes(*shape)
        # Fused bidirectional vs two mamba_ssm calls with the flips a bidirectional layer needs.
        b = with_grad(inputs(*shape, torch.bfloat16, seed=4))
        pair = {**{k + "0": a[k] for k in NAMES}, **{k + "1": b[k] for k in NAMES if k != "z"}}

        def fused(**k):
            pairs = [(k[name + "0"], k[name + "1"]) for name in ("u", "delta", "A", "B", "C", "D", "delta_bias")]
            return selective_scan_bidirectional_fn(*pairs, z=k["z0"], delta_softplus=True, backend="triton")

        def two_mamba(**k):
            fwd = mamba(k["u0"], k["delta0"], k["A0"], k["B0"], k["C0"], k["D0"], k["z0"], k["delta_bias0"], True)
            flip = [k[name].flip(-1) for name in ("u1", "delta1")]
            bwd = mamba(*flip, k["A1"], k["B1"].flip(-1), k["C1"].flip(-1), k["D1"], k["z0"].flip(-1),
                        k["delta_bias1"], True)
            return fwd + bwd.flip(-1)

        fused_t, two_t = timed(fused, pair, dout), timed(two_mamba, pair, dout)
        row = dict(shape=shape, mamba_fwd_ms=ref[0], mamba_fwd_bwd_ms=ref[1], ours_fwd_ms=ours[0],
                   ours_fwd_bwd_ms=ours[1], fwd_ratio=ours[0] / ref[0], fwd_bwd_ratio=ours[1] / ref[1],
                   graph_mamba_fwd_ms=ref[2], graph_mamba_fwd_bwd_ms=ref[3], graph_ours_fwd_ms=ours[2],
                   graph_ours_fwd_bwd_ms=ours[3], graph_fwd_ratio=ours[2] / ref[2],
                   graph_fwd_bwd_ratio=ours[3] / ref[3],
                   bidir_graph_fused_fwd_ms=fused_t[2], bidir_graph_fused_fwd_bwd_ms=fused_t[3],
                   bidir_graph_mamba_fwd_ms=two_t[2], bidir_graph_mamba_fwd_bwd_ms=two_t[3],
                   bidir_graph_fwd_ratio=fused_t[2] / two_t[2], bidir_graph_fwd_bwd_ratio=fused_t[3] / two_t[3],
                   floor_fwd_ms=floor[0] / bw * 1e3, floor_fwd_bwd_ms=floor[1] / bw * 1e3,
                   ours_fwd_GBps=floor[0] / ours[2] / 1e6, ours_fwd_bwd_GBps=floor[1] / ours[3] / 1e6,
                   mamba_fwd_GBps=floor[0] / ref[2] / 1e6, mamba_fwd_bwd_GBps=floor[1] / ref[3] / 1e6,
                   bidir_fused_fwd_ms=fused_t[0], bidir_fused_fwd_bwd_ms=fused_t[1],
                   bidir_mamba_fwd_ms=two_t[0], bidir_mamba_fwd_bwd_ms=two_t[1],
                   bidir_fwd_ratio=fused_t[0] / two_t[0], bidir_fwd_bwd_ratio=fused_t[1] / two_t[1],
                   config=triton_op.block_sizes(dim, length, n, ()),
                   segments=picked_segments(shape))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return bw, rows


def call_overhead():
    """Host time per call (microseconds) on a tiny shape, where the device work is negligible."""
    a = with_grad(inputs(2, 64, 16, 16, torch.bfloat16, seed=7))
    a["delta_softplus"] = True
    dout = torch.randn(2, 64, 16, device="cuda", dtype=torch.bfloat16)
    result = {}
    for name, fn in (("ours", lambda **k: selective_scan_fn(**k, backend="triton")), ("mamba_ssm", mamba)):
        for mode, step in (("fwd", lambda fn=fn: fn(**a)), ("fwd_bwd", fwd_bwd(fn, a, dout))):
            for _ in range(20):
                step()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(200):
                step()
            torch.cuda.synchronize()
            result[f"{name}_{mode}_us"] = (time.perf_counter() - t0) / 200 * 1e6
    print("host time per call (us):", json.dumps(result), flush=True)
    return result


def compiler_report():
    """Registers and spills of every compiled variant of the two kernels."""
    report = []
    for name, kernel in (("fwd", triton_op.s6_fwd_kernel), ("bwd", triton_op.s6_bwd_kernel),
                         ("segment states", triton_op.s6_segment_states_kernel),
                         ("segment adjoints", triton_op.s6_segment_adjoints_kernel)):
        for cache, *_ in kernel.device_caches.values():
            for compiled in cache.values():
                report.append(dict(kernel=name, warps=compiled.metadata.num_warps, regs=compiled.n_regs,
                                   spills=compiled.n_spills, shared=compiled.metadata.shared))
    for r in report:
        print("compiled", r)
    return report


def copy_bandwidth():
    x = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), warmup=25, rep=200, return_mode="median")
    return 2 * x.numel() / (ms * 1e-3)


def build_reference(src):
    dest = "/tmp/mamba_ref"
    log = open("/tmp/mamba_ref_build.log", "w")
    return dest, subprocess.Popen([sys.executable, os.path.join(src, "build_mamba_ssm_reference.py"), dest],
                                  stdout=log, stderr=subprocess.STDOUT)


def load_reference(dest, proc):
    if proc is not None and proc.wait() != 0:
        print(open("/tmp/mamba_ref_build.log").read()[-3000:])
        raise SystemExit("mamba_ssm reference build failed")
    sys.path[:0] = [os.path.join(dest, "mamba_ssm-2.3.2.post1"), os.path.join(dest, "build")]
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as ref_fn
    return ref_fn


def main():
    global mamba
    p = argparse.ArgumentParser()
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ref", help="the folder of mamba_ssm's sdist and build script: build it here")
    source.add_argument("--mamba", help="a mamba_ssm reference built already")
    p.add_argument("--out", required=True)
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--skip-checks", action="store_true")
    p.add_argument("--segments", action="store_true", help="first time each forced segment count per long shape")
    args = p.parse_args()
    t0 = time.time()
    dest, proc = (args.mamba, None) if args.mamba else build_reference(args.ref)
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__)
    if args.sweep:
        result["sweep"] = {}
        sweep(result["sweep"])
    mamba = load_reference(dest, proc)
    print(f"reference ready at {time.time() - t0:.0f} s", flush=True)
    if not args.skip_checks:
        run_checks()
    result["checks"] = checks
    if args.segments:
        result["segment_sweep"] = segment_sweep()
    bw, rows = benchmark()
    result.update(copy_GBps=bw / 1e9, rows=rows, compiled=compiler_report(), call_overhead=call_overhead())
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "s6_triton.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"\n{result['device']}, torch {result['torch']}, triton {result['triton']}; device copy "
          f"{bw / 1e9:.0f} GB/s; bf16, z, D, delta_bias, softplus; median ms of do_bench")
    print("do_bench (with Python call overhead):")
    print("| shape (batch, dim, L, N) | mamba_ssm fwd / fwd+bwd | ours fwd / fwd+bwd | ratio fwd / fwd+bwd "
          "| memory floor fwd / fwd+bwd | fused bidir / 2x mamba_ssm+flips fwd, fwd+bwd |")
    for r in rows:
        print(f"| {r['shape']} | {r['mamba_fwd_ms']:.3f} / {r['mamba_fwd_bwd_ms']:.3f} | {r['ours_fwd_ms']:.3f} / "
              f"{r['ours_fwd_bwd_ms']:.3f} | {r['fwd_ratio']:.2f} / {r['fwd_bwd_ratio']:.2f} | "
              f"{r['floor_fwd_ms']:.3f} / {r['floor_fwd_bwd_ms']:.3f} ms | {r['bidir_fused_fwd_ms']:.3f} / "
              f"{r['bidir_mamba_fwd_ms']:.3f} = "
              f"{r['bidir_fwd_ratio']:.2f}, {r['bidir_fused_fwd_bwd_ms']:.3f} / {r['bidir_mamba_fwd_bwd_ms']:.3f} = "
              f"{r['bidir_fwd_bwd_ratio']:.2f} |")
    print("\nCUDA-graph replays (device time alone), same runs:")
    print("| shape | segments | mamba_ssm fwd / fwd+bwd | ours fwd / fwd+bwd | ratio fwd / fwd+bwd | memory floor "
          "fwd / fwd+bwd | floor / ours (mamba_ssm) fwd, fwd+bwd | fused bidir / 2x mamba_ssm+flips fwd, fwd+bwd |")
    for r in rows:
        print(f"| {r['shape']} | {r['segments'][0]} | {r['graph_mamba_fwd_ms']:.3f} / "
              f"{r['graph_mamba_fwd_bwd_ms']:.3f} | "
              f"{r['graph_ours_fwd_ms']:.3f} / {r['graph_ours_fwd_bwd_ms']:.3f} | {r['graph_fwd_ratio']:.2f} / "
              f"{r['graph_fwd_bwd_ratio']:.2f} | {r['floor_fwd_ms']:.3f} / {r['floor_fwd_bwd_ms']:.3f} | "
              f"{r['floor_fwd_ms'] / r['graph_ours_fwd_ms']:.0%} ({r['floor_fwd_ms'] / r['graph_mamba_fwd_ms']:.0%}), "
              f"{r['floor_fwd_bwd_ms'] / r['graph_ours_fwd_bwd_ms']:.0%} "
              f"({r['floor_fwd_bwd_ms'] / r['graph_mamba_fwd_bwd_ms']:.0%}) | {r['bidir_graph_fwd_ratio']:.2f}, "
              f"{r['bidir_graph_fwd_bwd_ratio']:.2f} |")
    if args.segments:
        print("\nSegments (graph replays, ms fwd / fwd+bwd):")
        for r in result["segment_sweep"]:
            print(f"| {r['shape']} | {r['segments']}{' picked' if r['segments'] == r['picked'] else ''} | "
                  f"{r['fwd_ms']:.3f} / {r['fwd_bwd_ms']:.3f} |")
    print(f"checks: {len(checks) - len(failures)}/{len(checks)} pass" + (f"; FAILED: {failures}" if failures else ""))
    sys.exit(1 if failures else 0)


mamba = None
if __name__ == "__main__":
    main()
