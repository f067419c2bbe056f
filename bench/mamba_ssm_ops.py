"""Our ops as drop-ins for mamba_ssm's, on the GPU, on the cases mamba_ssm's own op tests take, in one process.

    python bench/mamba_ssm_ops.py --mamba DIR --out OUT

DIR: the mamba_ssm reference built by `../shared/reference/build_mamba_ssm_reference.py DIR` (its CUDA
selective scan; its Triton ops need einops). For every case both ops run on the same inputs and are judged
against the same float64 oracle with mamba_ssm's test tolerances (torch.allclose), outputs and gradients:
- selective_scan_fn: float32/float16/bfloat16 inputs, L from 8 to 4096, B and C time-varying (1 or 2 groups)
  or time-invariant, with and without z, D, delta_bias and softplus;
- selective_state_update: both forms, float32/16-bit states, with and without z, tied or untied heads;
- mamba_chunk_scan_combined with packed sequences (seq_idx, cu_seqlens, return_varlen_states).
A case counts against us when mamba_ssm passes it and we do not. Also: the relative error of dA against the
oracle in 16-bit inputs at L = 1024..4096, and the time of one decoding step (eager call; CUDA graph replay).
Prints tables, writes OUT/mamba_ssm_ops.json, exits non-zero when a case counts against us.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch
from triton.testing import do_bench, do_bench_cudagraph

from mambamixer.kernels import (
    mamba_chunk_scan_combined,
    mamba_chunk_scan_ref,
    selective_scan_fn,
    selective_state_update,
)
from mambamixer.kernels.selective_scan import selective_scan_fast

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LENGTHS = [8, 16, 32, 64, 128, 256, 372, 512, 784, 1024, 1134, 2048, 4096]
# (B time-varying, C time-varying, groups), as mamba_ssm's test grid combines them
BC_KINDS = [(True, True, 1), (True, True, 2), (False, True, 1), (True, False, 1), (False, False, 1)]


def scan_tolerances(itype, has_z):
    """mamba_ssm's test_selective_scan tolerances: (rtol, atol) per compared tensor."""
    rtol, atol = (6e-4, 2e-3) if itype == torch.float32 else (3e-3, 5e-3)
    if itype == torch.bfloat16:
        rtol, atol = 3e-2, 5e-2
    rtolw, atolw = 1e-3, 1e-3
    if has_z:
        rtolw, atolw = max(rtolw, rtol), max(atolw, atol)
    return dict(out=(rtol, atol), state=(rtol, atol), u=(2 * rtol, 2 * atol), delta=(5 * rtol, 10 * atol),
                A=(rtolw, 5 * atolw), D=(rtolw, atolw), z=(rtolw, atolw), delta_bias=(rtolw, atolw))


def scan_case(itype, length, var_b, var_c, groups, full):
    """mamba_ssm's test inputs (batch 2, dim 4, N 8, seed 0); `full`: z, D, delta_bias and softplus."""
    torch.manual_seed(0)
    dev, batch, dim, n = "cuda", 2, 4, 8

    def bc():
        shape = (batch, n, length) if groups == 1 else (batch, groups, n, length)
        return torch.randn(*shape, device=dev, dtype=itype)

    args = dict(u=torch.randn(batch, dim, length, device=dev, dtype=itype),
                delta=0.5 * torch.rand(batch, dim, length, device=dev, dtype=itype),
                A=-0.5 * torch.rand(dim, n, device=dev),
                B=bc() if var_b else torch.randn(dim, n, device=dev),
                C=bc() if var_c else torch.randn(dim, n, device=dev))
    if full:
        args.update(D=torch.randn(dim, device=dev), z=torch.randn(batch, dim, length, device=dev, dtype=itype),
                    delta_bias=0.5 * torch.rand(dim, device=dev))
    return args


def run_scan(fn, args, full, dout):
    """out, last state and every gradient of fn (mamba_ssm's or ours) on copies of args."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in args.items()}
    out, last = fn(**leaves, delta_softplus=full, return_last_state=True)
    grads = torch.autograd.grad(out, list(leaves.values()), dout.to(out.dtype))
    return dict(out=out, state=last, **dict(zip(leaves, grads)))


def oracle(args, full, dout):
    """The same in float64: our PyTorch scan (checked against the sequential recurrence in tests/)."""
    exact = {k: v.double() for k, v in args.items()}
    return run_scan(lambda **k: selective_scan_fast(**k), exact, full, dout.double())


def judge(result, exact, tolerances):
    """{tensor: (passes mamba_ssm's allclose, relative error)}."""
    verdict = {}
    for name, ref in exact.items():
        got = result[name].double()
        rtol, atol = tolerances.get(name, tolerances["out"] if name in ("B", "C") else tolerances["D"])
        rel = ((got - ref).norm() / ref.norm().clamp_min(1e-300)).item()
        verdict[name] = (bool(torch.allclose(got, ref, rtol=rtol, atol=atol)), rel)
    return verdict


def scan_grid(mamba_scan, results):
    rows, against_us = [], []
    for (iname, itype), length, (var_b, var_c, groups), full in itertools.product(
            DTYPES.items(), LENGTHS, BC_KINDS, (True, False)):
        args = scan_case(itype, length, var_b, var_c, groups, full)
        dout = torch.randn(2, 4, length, device="cuda").to(itype)  # the output's gradient, as the ops get it
        exact = oracle(args, full, dout)
        tol = scan_tolerances(itype, full)
        if not var_b:  # weights, not activations: mamba_ssm's rtolw, atolw
            tol["B"] = tol["D"]
        if not var_c:
            tol["C"] = tol["D"]
        case = dict(itype=iname, L=length, B="var" if var_b else "inv", C="var" if var_c else "inv", groups=groups,
                    full=full)
        for who, fn in (("mamba_ssm", mamba_scan), ("ours", selective_scan_fn)):
            try:
                case[who] = judge(run_scan(fn, args, full, dout), exact, tol)
            except Exception as e:  # noqa: BLE001 - a raise is a failed case, reported by its message
                case[who] = {"raised": (False, f"{type(e).__name__}: {e}"[:200])}
        ok = {who: all(v[0] for v in case[who].values()) for who in ("mamba_ssm", "ours")}
        case["pass"] = ok
        if ok["mamba_ssm"] and not ok["ours"]:
            against_us.append(case)
        rows.append(case)
    results["selective_scan"] = rows
    passes = {who: sum(r["pass"][who] for r in rows) for who in ("mamba_ssm", "ours")}
    print(f"selective_scan_fn, {len(rows)} cases: mamba_ssm passes {passes['mamba_ssm']}, ours {passes['ours']}; "
          f"passed by mamba_ssm and not by ours: {len(against_us)}")
    for case in against_us:
        bad = {k: v for k, v in case["ours"].items() if not v[0]}
        print(f"  AGAINST US {({k: case[k] for k in ('itype', 'L', 'B', 'C', 'groups', 'full')})}: {bad}")
    print("\ndA relative error against float64, 16-bit inputs (B, C time-varying, 1 group, z, D, delta_bias):")
    print("| inputs | L | mamba_ssm | ours |")
    print("| --- | ---: | ---: | ---: |")
    results["dA_error"] = []
    for r in rows:
        if r["itype"] != "fp32" and r["L"] >= 1024 and r["B"] == "var" and r["C"] == "var" and r["groups"] == 1 \
                and r["full"] and "A" in r["ours"] and "A" in r["mamba_ssm"]:
            e = dict(itype=r["itype"], L=r["L"], mamba_ssm=r["mamba_ssm"]["A"][1], ours=r["ours"]["A"][1])
            results["dA_error"].append(e)
            print(f"| {e['itype']} | {e['L']} | {e['mamba_ssm']:.2e} | {e['ours']:.2e} |")
    return against_us


def state_update_case(itype, heads, dstate, ngroups, has_z, tie, batch=2, dim=2048 + 16):
    """mamba_ssm's test_selective_state_update(_with_heads) inputs (seed 0): heads=None, Mamba-1's form with
    `dim` channels; else `heads` heads of 64 channels, dt, dt_bias, A and D tied over each head with `tie`."""
    torch.manual_seed(0)
    dev = "cuda"
    if heads is None:
        args = dict(state=torch.randn(batch, dim, dstate, device=dev, dtype=itype),
                    x=torch.randn(batch, dim, device=dev, dtype=itype),
                    dt=torch.randn(batch, dim, device=dev, dtype=itype),
                    dt_bias=torch.rand(dim, device=dev) - 4.0, A=-torch.rand(dim, dstate, device=dev) - 1.0,
                    B=torch.randn(batch, dstate, device=dev), C=torch.randn(batch, dstate, device=dev),
                    D=torch.randn(dim, device=dev))
    else:
        p = 64
        per_head = (heads,) if tie else (heads, p)

        def over_p(t):  # (..., H) -> (..., H, P), by stride 0 when tied
            return t[..., None].expand(*t.shape, p) if tie else t

        args = dict(state=torch.randn(batch, heads, p, dstate, device=dev, dtype=itype),
                    x=torch.randn(batch, heads, p, device=dev, dtype=itype),
                    dt=over_p(torch.randn(batch, *per_head, device=dev, dtype=itype)),
                    dt_bias=over_p(torch.rand(*per_head, device=dev) - 4.0),
                    A=over_p(-torch.rand(*per_head, device=dev) - 1.0)[..., None].expand(heads, p, dstate),
                    B=torch.randn(batch, ngroups, dstate, device=dev),
                    C=torch.randn(batch, ngroups, dstate, device=dev),
                    D=over_p(torch.randn(*per_head, device=dev)))
    args["z"] = torch.randn_like(args["x"]) if has_z else None
    return args


def state_update_grid(mamba_update, results):
    rows, against_us = [], []
    for (iname, itype), form, dstate, has_z in itertools.product(
            DTYPES.items(), [None, (32, 1, False), (32, 2, True), (64, 4, True)], (16, 32, 64), (False, True)):
        heads, ngroups, tie = form if form else (None, 1, False)
        args = state_update_case(itype, heads, dstate, ngroups, has_z, tie)
        rtol, atol = (3e-4, 1e-3) if itype == torch.float32 else ((5e-3, 1e-2) if heads is None else (5e-3, 3e-2))
        if itype == torch.bfloat16:
            rtol, atol = (1e-2, 5e-2) if heads is None else (1e-2, 1e-1)
        exact_state = args["state"].double()
        exact_out = selective_state_update(exact_state, **{k: None if v is None else v.double()
                                                           for k, v in args.items() if k != "state"},
                                           dt_softplus=True, backend="torch")
        case = dict(itype=iname, heads=heads, dstate=dstate, ngroups=ngroups, z=has_z, tie=tie)
        for who, fn in (("mamba_ssm", mamba_update), ("ours", selective_state_update)):
            state = args["state"].clone()
            try:
                out = fn(state, **{k: v for k, v in args.items() if k != "state"}, dt_softplus=True)
                case[who] = bool(state.dtype == itype
                                 and torch.allclose(state.double(), exact_state, rtol=rtol, atol=atol)
                                 and torch.allclose(out.double(), exact_out, rtol=rtol, atol=atol))
            except Exception as e:  # noqa: BLE001
                case[who] = False
                case[who + "_raised"] = f"{type(e).__name__}: {e}"[:200]
        if case["mamba_ssm"] and not case["ours"]:
            against_us.append(case)
        rows.append(case)
    results["selective_state_update"] = rows
    print(f"\nselective_state_update, {len(rows)} cases: mamba_ssm passes {sum(r['mamba_ssm'] for r in rows)}, ours "
          f"{sum(r['ours'] for r in rows)}; passed by mamba_ssm and not by ours: {len(against_us)}")
    for case in against_us:
        print(f"  AGAINST US {case}")
    return against_us


def decode_step_time(mamba_update, results):
    """One decoding step at batch 1: Mamba-1 2.8B's layer (dim 5120, N 16) and Mamba-2 2.7B's (80 heads of 64,
    N 128, tied), eager call (host-bound) and CUDA-graph replay, microseconds."""
    print("\ndecoding step, batch 1, median microseconds: eager call (host + launch) / CUDA-graph replay")
    print("| layer | mamba_ssm | ours | ratio eager, graph |")
    print("| --- | ---: | ---: | ---: |")
    results["decode_step_us"] = []
    for name, heads, dstate in (("Mamba-1, dim 5120, N 16", None, 16), ("Mamba-2, 80 x 64 heads, N 128", 80, 128)):
        args = state_update_case(torch.bfloat16, heads, dstate, 1, True, heads is not None, batch=1, dim=5120)
        times = {}
        for who, fn in (("mamba_ssm", mamba_update), ("ours", selective_state_update)):
            def step(fn=fn, args=args):
                return fn(**args, dt_softplus=True)
            times[who] = (1e3 * do_bench(step, warmup=50, rep=300, return_mode="median"),
                          1e3 * do_bench_cudagraph(step, rep=300, return_mode="median"))
        row = dict(layer=name, mamba_ssm=times["mamba_ssm"], ours=times["ours"])
        results["decode_step_us"].append(row)
        print(f"| {name} | {times['mamba_ssm'][0]:.1f} / {times['mamba_ssm'][1]:.1f} | {times['ours'][0]:.1f} / "
              f"{times['ours'][1]:.1f} | {times['ours'][0] / times['mamba_ssm'][0]:.2f}, "
              f"{times['ours'][1] / times['mamba_ssm'][1]:.2f} |")


def varlen_check(mamba_ssd, results):
    """Packed sequences (lengths 300, 1, 700, 23, 1000) in fp32 and bf16, against the float64 reference:
    outputs and varlen states (forward), and outputs' gradients with seq_idx (mamba_ssm has no backward with
    return_varlen_states)."""
    torch.manual_seed(0)
    lengths = [300, 1, 700, 23, 1000]
    cu = torch.tensor([0, *lengths], device="cuda").cumsum(0).to(torch.int32)
    seq = torch.repeat_interleave(torch.arange(len(lengths), device="cuda"), torch.tensor(lengths, device="cuda"))
    seq = seq[None].to(torch.int32)
    L, H, P, G, N = sum(lengths), 8, 64, 2, 64
    print("\nmamba_chunk_scan_combined, packed sequences, relative error against float64 (fwd out / varlen states / "
          "grads of x, dt, B, C with seq_idx):")
    print("| inputs | mamba_ssm | ours |")
    print("| --- | --- | --- |")
    results["varlen"] = []
    for iname, itype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        args = dict(x=torch.randn(1, L, H, P, device="cuda", dtype=itype), dt=torch.randn(1, L, H, device="cuda"),
                    A=-torch.rand(H, device="cuda") - 0.5, B=torch.randn(1, L, G, N, device="cuda", dtype=itype),
                    C=torch.randn(1, L, G, N, device="cuda", dtype=itype), D=torch.randn(H, device="cuda"),
                    dt_bias=torch.randn(H, device="cuda"))
        exact = {k: v.double().requires_grad_(k in ("x", "dt", "B", "C")) for k, v in args.items()}
        r_out, r_var = mamba_chunk_scan_ref(**exact, seq_idx=seq, cu_seqlens=cu, dt_softplus=True,
                                            return_varlen_states=True)
        dout = torch.randn_like(r_out)
        r_grads = torch.autograd.grad(r_out, [exact[k] for k in ("x", "dt", "B", "C")], dout)
        row = dict(itype=iname)
        for who, fn in (("mamba_ssm", mamba_ssd), ("ours", mamba_chunk_scan_combined)):
            out, var = fn(**args, chunk_size=256, seq_idx=seq, cu_seqlens=cu, dt_softplus=True,
                          return_varlen_states=True)
            leaves = {k: v.detach().clone().requires_grad_(k in ("x", "dt", "B", "C")) for k, v in args.items()}
            out_g = fn(**leaves, chunk_size=256, seq_idx=seq, dt_softplus=True)
            grads = torch.autograd.grad(out_g, [leaves[k] for k in ("x", "dt", "B", "C")], dout.to(out_g.dtype))
            rel = [((a.double() - b).norm() / b.norm()).item() for a, b in
                   [(out, r_out.detach()), (var, r_var), *zip(grads, r_grads)]]
            row[who] = rel
        results["varlen"].append(row)
        print(f"| {iname} | {' / '.join(f'{e:.1e}' for e in row['mamba_ssm'])} | "
              f"{' / '.join(f'{e:.1e}' for e in row['ours'])} |")
    worse = [r for r in results["varlen"] if max(r["ours"]) > max(2 * max(r["mamba_ssm"]), 1e-5)]
    return worse


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mamba", required=True, help="the built mamba_ssm reference (DEST of its build script)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    sys.path[:0] = [os.path.join(args.mamba, "mamba_ssm-2.3.2.post1"), os.path.join(args.mamba, "build")]
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as mamba_scan
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update as mamba_update
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as mamba_ssd

    results = dict(device=torch.cuda.get_device_name(), torch=torch.__version__)
    against_us = scan_grid(mamba_scan, results)
    against_us += state_update_grid(mamba_update, results)
    worse = varlen_check(mamba_ssd, results)
    decode_step_time(mamba_update, results)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "mamba_ssm_ops.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"\ncases passed by mamba_ssm and not by ours: {len(against_us)}; varlen rows worse than mamba_ssm: "
          f"{len(worse)}")
    sys.exit(1 if against_us or worse else 0)


if __name__ == "__main__":
    main()
