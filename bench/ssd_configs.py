"""Which launch configurations of the Triton SSD kernels run on this GPU, and how fast.

    python bench/ssd_configs.py --out DIR

Each configuration (the products' operand precision, the kernels' chunk T, warps per program, and
optionally DISABLE_MMA_V3=1, which stops Triton from emitting Hopper wgmma instructions) runs forward and
backward at each shape in a subprocess of its own, so that a fault (an illegal memory access) is reported
and the next one still runs. Inputs are bf16 x, B, C, z with D, dt_bias and softplus, as the mixers call the
op; the error is the relative error of the output and the worst of the gradients against our PyTorch path
on the same inputs; times are the median of `do_bench`, forward and forward+backward. The first row is the
configuration the op picks for these inputs. Prints a table and writes DIR/ssd_configs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# (batch, L, H, P, G, N): vim2_tiny's first-stage token-mixer scan with ssm="ssd" at batch 64, and a
# Mamba-2 language-model layer (d_model 768, headdim 64), as in bench/ssd_triton.py.
SHAPES = ["64,3136,3,64,1,16", "8,2048,24,64,1,128"]
# (precision, T, warps, extra environment); 64-step chunks run at the first shape only: at N = 128 the
# backward of a 64-step chunk does not fit in the H100's shared memory.
CONFIGS = [("bf16", 32, 4, {}), ("tf32", 32, 4, {}), ("bf16", 64, 4, {}), ("tf32", 64, 4, {}), ("tf32", 64, 8, {}),
           ("bf16", 64, 4, {"DISABLE_MMA_V3": "1"})]

CASE = r"""
import json, sys, torch
from triton.testing import do_bench
from mambamixer.kernels import mamba_chunk_scan_combined
from mambamixer.kernels.ssd import triton_op

precision, T, warps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
batch, length, heads, p, groups, n = map(int, sys.argv[4].split(","))
picked = triton_op._config
triton_op.CHUNK = T
triton_op._config = lambda x, B, C, chunk: {**picked(x, B, C, chunk), "PRECISION": precision, "num_warps": warps}
g = torch.Generator(device="cuda").manual_seed(0)
randn = lambda *shape, scale=1.0: scale * torch.randn(*shape, generator=g, device="cuda")
a = dict(x=randn(batch, length, heads, p), dt=randn(batch, length, heads, scale=0.5),
         A=-(0.5 + torch.rand(heads, generator=g, device="cuda")), B=randn(batch, length, groups, n, scale=n ** -0.5),
         C=randn(batch, length, groups, n, scale=n ** -0.5), D=randn(heads), z=randn(batch, length, heads, p),
         dt_bias=randn(heads, scale=0.5))
a = {k: v.bfloat16() if k in ("x", "dt", "B", "C", "z") else v for k, v in a.items()}
results = []
for backend in ("triton", "torch"):
    t = {k: v.clone().requires_grad_(True) for k, v in a.items()}
    out = mamba_chunk_scan_combined(**t, chunk_size=64, dt_softplus=True, backend=backend)
    results.append((out, torch.autograd.grad(out.float().square().sum(), list(t.values()))))
torch.cuda.synchronize()
rel = lambda u, v: ((u.double() - v.double()).norm() / v.double().norm()).item()
t = {k: v.clone().requires_grad_(True) for k, v in a.items()}
dout = torch.randn_like(a["x"])
run = lambda **k: mamba_chunk_scan_combined(**k, chunk_size=64, dt_softplus=True, backend="triton")
with torch.no_grad():
    fwd = do_bench(lambda: run(**a), return_mode="median")
fwd_bwd = do_bench(lambda: torch.autograd.grad(run(**t), list(t.values()), dout), return_mode="median")
print("RESULT " + json.dumps(dict(out_err=rel(results[0][0], results[1][0]),
                                  grad_err=max(rel(u, v) for u, v in zip(results[0][1], results[1][1])),
                                  fwd_ms=fwd, fwd_bwd_ms=fwd_bwd)))
"""


def run_case(precision, T, warps, env, shape, timeout):
    row = dict(precision=precision, T=T, warps=warps, env=env, shape=shape)
    try:
        p = subprocess.run([sys.executable, "-c", CASE, precision, str(T), str(warps), shape], capture_output=True,
                           text=True, timeout=timeout, env={**os.environ, **env})
    except subprocess.TimeoutExpired:
        return dict(row, status=f"timed out after {timeout} s")
    result = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    if p.returncode == 0 and result:
        return dict(row, status="ok", **json.loads(result[0][len("RESULT "):]))
    errors = [line for line in p.stderr.splitlines() if "Error: " in line]
    return dict(row, status=(errors[-1] if errors else p.stderr[-300:]).strip())


def table_row(r):
    cfg = f"{r['precision']}, T {r['T']}, {r['warps']} warps{' ' + str(r['env']) if r['env'] else ''}"
    if r["status"] != "ok":
        return f"| {cfg} | ({r['shape']}) | {r['status'][:120]} | | |"
    return (f"| {cfg} | ({r['shape']}) | ok | {r['out_err']:.1e} / {r['grad_err']:.1e} "
            f"| {r['fwd_ms']:.3f} / {r['fwd_bwd_ms']:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=int, default=90, help="seconds per configuration and shape")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    import torch
    import triton

    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__, rows=[])
    for precision, T, warps, env in CONFIGS:
        for shape in SHAPES if T == 32 else SHAPES[:1]:
            result["rows"].append(run_case(precision, T, warps, env, shape, args.timeout))
            print(table_row(result["rows"][-1]), flush=True)
            with open(os.path.join(args.out, "ssd_configs.json"), "w") as f:
                json.dump(result, f, indent=1)
    print("\n| configuration | shape | status | error out / grads | fwd / fwd+bwd ms |")
    print("| --- | --- | --- | --- | --- |")
    for r in result["rows"]:
        print(table_row(r))


if __name__ == "__main__":
    main()
