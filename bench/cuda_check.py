"""CUDA check of the layers: ops against the float64 recurrence and every layer variant in float32, bf16
autocast and torch.compile, on the GPU (both scans through the Triton kernels, as "auto" picks them;
the SelectiveSSM layers also against backend="torch"). Prints one line per check and exits non-zero on a
failure.

    python bench/cuda_check.py
"""

from __future__ import annotations

import copy
import sys

import torch

from mambamixer.kernels import (
    mamba_chunk_scan_combined,
    mamba_chunk_scan_ref,
    selective_scan_fn,
    selective_scan_ref,
    selective_state_update,
    weighted_sum,
    weighted_sum_ref,
)
from mambamixer.kernels.ssd.varlen import sequence_of_positions as varlen_seq
from mambamixer.mixer import ChannelWiseSelectiveMixer, CrossScanSSM, MambaMixer, SelectiveSSM
from mambamixer.tasks.forecasting.tsm2 import TSM2
from mambamixer.utils.cuda_graph import GraphedTraining

failures = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)
    if not ok:
        failures.append(name)


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def weighted_sum_error(count: int, shape: tuple) -> float:
    """The largest relative error of `weighted_sum` (float32, CUDA) against the float64 chain, over the
    output and every gradient, for `count` random tensors of `shape`."""
    weights = torch.randn(count, device="cuda", requires_grad=True)
    tensors = [torch.randn(*shape, device="cuda", requires_grad=True) for _ in range(count)]
    out = weighted_sum(weights, tensors)
    grads = torch.autograd.grad(out.square().sum(), [weights, *tensors])
    exact = [t.detach().double().requires_grad_(True) for t in (weights, *tensors)]
    ref = weighted_sum_ref(exact[0], exact[1:])
    ref_grads = torch.autograd.grad(ref.square().sum(), exact)
    return max([rel(out, ref)] + [rel(g, r) for g, r in zip(grads, ref_grads)])


def graphed_training_error() -> tuple[float, bool]:
    """Five AdamW steps of TSM2 (dropout 0.2, covariates), eager and through `GraphedTraining`, from the same
    weights and CUDA random state; the fourth batch is smaller (run eagerly by both). The largest relative
    difference over the losses and the final weights, and whether the graphs were captured."""
    batches = [(torch.randn(n, 512, 7, device="cuda"), torch.rand(n, 512, 4, device="cuda") - 0.5,
                torch.randn(n, 96, 7, device="cuda")) for n in (16, 16, 16, 5, 16)]
    model = TSM2(512, 96, 7, n_covariates=4, d_model=32, dropout=0.2).cuda()
    runs = []
    for use_graphs in (False, True):
        trained = copy.deepcopy(model).train()
        optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-3)
        forward = GraphedTraining(trained, enabled=use_graphs)
        torch.cuda.manual_seed(1)
        losses = []
        for x, c, y in batches:
            loss = torch.nn.functional.mse_loss(forward(x, c), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.detach())
        runs.append((torch.stack(losses), [p.detach() for p in trained.parameters()], forward._graphed is not None))
    (eager_losses, eager_weights, _), (losses, weights, graphed) = runs
    pairs = zip([losses, *weights], [eager_losses, *eager_weights])
    return max(((a - b).norm() / b.norm().clamp_min(1e-30)).item() for a, b in pairs), graphed


def main() -> None:
    dev = "cuda"
    torch.manual_seed(0)
    b, d, L, n = 4, 64, 257, 16
    u, delta, z = (torch.randn(b, d, L, device=dev) for _ in range(3))
    A = -(torch.rand(d, n, device=dev) + 0.5)
    B, C = torch.randn(b, 2, n, L, device=dev), torch.randn(b, 2, n, L, device=dev)
    D, bias = torch.randn(d, device=dev), torch.randn(d, device=dev)
    for reverse in (False, True):
        for dtype in (torch.float32, torch.bfloat16):
            args = [t.to(dtype) for t in (u, delta)] + [A] + [t.to(dtype) for t in (B, C)]
            out = selective_scan_fn(*args, D, z.to(dtype), bias, True, reverse=reverse)
            ref = selective_scan_ref(*(t.double() for t in args), D.double(), z.to(dtype).double(),
                                     bias.double(), True, reverse=reverse)
            err = rel(out, ref)
            check(f"selective_scan {dtype} reverse={reverse}", err < (1e-5 if dtype == torch.float32 else 1e-2),
                  f"rel err {err:.1e}")
    x, dt = torch.randn(b, L, 8, 16, device=dev), torch.randn(b, L, 8, device=dev)
    Ah = -(torch.rand(8, device=dev) + 0.5)
    Bs, Cs = torch.randn(b, L, 2, n, device=dev), torch.randn(b, L, 2, n, device=dev)
    for reverse in (False, True):
        out = mamba_chunk_scan_combined(x, dt, Ah, Bs, Cs, 64, D=torch.ones(8, device=dev), dt_softplus=True,
                                        reverse=reverse)
        ref = mamba_chunk_scan_ref(*(t.double() for t in (x, dt, Ah, Bs, Cs)), D=torch.ones(8, device=dev).double(),
                                   dt_softplus=True, reverse=reverse)
        err = rel(out, ref)
        check(f"ssd float32 reverse={reverse}", err < 1e-5, f"rel err {err:.1e}")

    # Time-invariant B (the PyTorch path on CUDA), the decoding step's kernel with a bf16 state, packed sequences.
    Bi = torch.randn(d, n, device=dev)
    out = selective_scan_fn(u, delta, A, Bi, C, D, z, bias, True)
    ref = selective_scan_ref(u.double(), delta.double(), A.double(), Bi.double(), C.double(), D.double(), z.double(),
                             bias.double(), True)
    check("selective_scan time-invariant B", rel(out, ref) < 1e-5, f"rel err {rel(out, ref):.1e}")
    state = torch.randn(b, 8, 16, n, device=dev).bfloat16()
    exact = state.double()
    step_args = (torch.randn(b, 8, 16, device=dev), torch.randn(b, 8, 16, device=dev),
                 -torch.rand(8, 16, n, device=dev), torch.randn(b, 2, n, device=dev), torch.randn(b, 2, n, device=dev))
    out = selective_state_update(state, *step_args, dt_softplus=True)
    ref = selective_state_update(exact, *(t.double() for t in step_args), dt_softplus=True, backend="torch")
    err = max(rel(out, ref), rel(state, exact.bfloat16()))
    check("selective_state_update bf16 state, Triton kernel", state.dtype == torch.bfloat16 and err < 1e-2,
          f"rel err {err:.1e}")
    cu = torch.tensor([0, 40, 41, 100, L], device=dev)
    xs, dts, Bp, Cp = x[:1].clone().requires_grad_(), dt[:1].clone().requires_grad_(), Bs[:1], Cs[:1]
    out, var = mamba_chunk_scan_combined(xs, dts, Ah, Bp, Cp, 64, dt_softplus=True, cu_seqlens=cu,
                                         return_varlen_states=True)
    exact = [t.detach().double().requires_grad_() for t in (xs, dts)]
    ref, ref_var = mamba_chunk_scan_ref(*exact, Ah.double(), Bp.double(), Cp.double(), dt_softplus=True,
                                        seq_idx=varlen_seq(cu, L), cu_seqlens=cu, return_varlen_states=True)
    grads = torch.autograd.grad(out.square().sum(), [xs, dts])
    ref_grads = torch.autograd.grad(ref.square().sum(), exact)
    err = max([rel(out, ref), rel(var, ref_var)] + [rel(g, r) for g, r in zip(grads, ref_grads)])
    check("ssd packed sequences (out, varlen states, grads)", err < 1e-4, f"max rel err {err:.1e}")

    variants = [dict(ssm="s6"), dict(ssm="s6", bidirectional=True), dict(ssm="ssd", headdim=32),
                dict(ssm="ssd", headdim=32, bidirectional=True, ngroups=2)]
    for kw in variants:
        layer = SelectiveSSM(64, **kw).to(dev)
        h = torch.randn(8, 100, 64, device=dev)
        y = layer(h)
        y.square().mean().backward()
        check(f"SelectiveSSM {kw} float32", torch.isfinite(y).all().item() and all(
            p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters()))
        grads = [p.grad.clone() for p in layer.parameters()]
        layer.zero_grad()
        for direction in layer.directions:
            direction.backend = "torch"
        y_torch = layer(h)
        y_torch.square().mean().backward()
        err = max([rel(y, y_torch)] + [rel(g, p.grad) for g, p in zip(grads, layer.parameters())])
        check(f"SelectiveSSM {kw} triton == torch (out and grads)", err < 1e-4, f"max rel err {err:.1e}")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yb = layer(h)
        err = rel(yb.float(), y.detach())
        check(f"SelectiveSSM {kw} torch backend bf16 autocast", yb.dtype == torch.bfloat16 and err < 5e-2,
              f"rel err {err:.1e}")
        for direction in layer.directions:
            direction.backend = "auto"
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yb = layer(h)
        err = rel(yb.float(), y.detach())
        check(f"SelectiveSSM {kw} bf16 autocast", yb.dtype == torch.bfloat16 and err < 5e-2, f"rel err {err:.1e}")
        # Compile on a short sequence (compilation time grows with the graph).
        short = h[:, :12]
        compiled = torch.compile(layer)
        yc = compiled(short)
        yc.sum().backward()
        err = rel(yc, layer(short).detach())
        check(f"SelectiveSSM {kw} torch.compile", err < 1e-4, f"rel err {err:.1e}")

    for cls in (CrossScanSSM, ChannelWiseSelectiveMixer):  # ViM2's mixers on a 6 x 10 grid
        layers = {b: cls(32, backend=b).to(dev) for b in ("triton", "torch")}
        layers["torch"].load_state_dict(layers["triton"].state_dict())
        x = torch.randn(4, 6, 10, 32, device=dev)
        ys = {b: layer(x) for b, layer in layers.items()}
        for y in ys.values():
            y.square().mean().backward()
        pairs = zip(layers["triton"].parameters(), layers["torch"].parameters())
        err = max([rel(ys["triton"], ys["torch"])] + [rel(p.grad, q.grad) for p, q in pairs])
        check(f"{cls.__name__} triton == torch (out and grads)", err < 1e-4, f"max rel err {err:.1e}")
        err = rel(torch.compile(layers["triton"])(x), ys["triton"].detach())
        check(f"{cls.__name__} torch.compile", err < 1e-4, f"rel err {err:.1e}")

    err = weighted_sum_error(20, (4, 7, 7, 96))  # three launches
    check("weighted_sum float32 vs float64 (out and grads)", err < 1e-5, f"max rel err {err:.1e}")

    model = MambaMixer(64, 49, depth=3, token_mixer=dict(ssm="ssd", headdim=32), drop_path=0.1).to(dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = model(torch.randn(8, 49, 64, device=dev))
    y.float().square().mean().backward()
    check("MambaMixer bf16 autocast forward+backward", torch.isfinite(y).all().item())

    tsm2 = TSM2(512, 96, 7, n_covariates=4, d_model=32).to(dev).eval()
    xs, cs = torch.randn(2, 512, 7, device=dev), torch.rand(2, 512, 4, device=dev) - 0.5
    stream = tsm2.stream(2)
    for t in range(512):
        stream.update(xs[:, t], cs[:, t])
    err = rel(stream.forecast(), tsm2(xs, cs))
    check("TSM2 stream == forward on CUDA", err < 1e-4, f"rel err {err:.1e}")

    err, graphed = graphed_training_error()
    check("TSM2 training from CUDA graphs == eager (dropout, a partial batch)", graphed and err < 1e-5,
          f"captured: {graphed}, max rel err over losses and weights {err:.1e}")
    print(f"{len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
