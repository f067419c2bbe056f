"""Random inputs for the scan ops, the error measure the tests share, a check that a layer agrees on both
scan backends, a callback that stops a run for resume tests, bench/ scripts as modules, and the torch operators
that compute around the S6 kernels."""

from __future__ import annotations

import collections
import importlib.util
import sys
from pathlib import Path

import lightning
import torch


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, in float64."""
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def s6_inputs(batch=2, dim=4, length=7, n=3, groups=None, full=True, seed=0):
    """Float64 arguments of `selective_scan_fn`; `full` adds D, z, delta_bias and softplus."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    bc_shape = (batch, n, length) if groups is None else (batch, groups, n, length)
    args = dict(
        u=randn(batch, dim, length),
        # Without softplus delta must already be positive.
        delta=0.5 * randn(batch, dim, length) if full else 0.02 + 0.5 * torch.rand(batch, dim, length, generator=g,
                                                                                    dtype=torch.float64),
        A=-(0.5 + torch.rand(dim, n, generator=g, dtype=torch.float64)),
        B=randn(*bc_shape),
        C=randn(*bc_shape),
    )
    if full:
        args.update(D=randn(dim), z=randn(batch, dim, length), delta_bias=0.5 * randn(dim), delta_softplus=True)
    return args


def ssd_inputs(batch=2, length=7, heads=4, headdim=3, groups=1, n=5, full=True, d_per_channel=False, seed=0):
    """Float64 arguments of `mamba_chunk_scan_combined` (without chunk_size); `full` adds D, z, dt_bias,
    softplus and initial states."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    args = dict(
        x=randn(batch, length, heads, headdim),
        dt=0.5 * randn(batch, length, heads) if full else 0.02 + 0.5 * torch.rand(batch, length, heads, generator=g,
                                                                                   dtype=torch.float64),
        A=-(0.5 + torch.rand(heads, generator=g, dtype=torch.float64)),
        B=randn(batch, length, groups, n),
        C=randn(batch, length, groups, n),
    )
    if full:
        args.update(
            D=randn(heads, headdim) if d_per_channel else randn(heads),
            z=randn(batch, length, heads, headdim),
            dt_bias=0.5 * randn(heads),
            initial_states=randn(batch, heads, headdim, n),
            dt_softplus=True,
        )
    return args


def token_major(t: torch.Tensor) -> torch.Tensor:
    """t (batch, ..., X, L) stored as (batch, ..., L, X): how a layer's (batch, L, channels) tensors arrive."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def with_grad(args: dict) -> dict:
    """Copies of the tensor arguments that require grad (leaves), other arguments as they are."""
    return {k: v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def grads(out: torch.Tensor, args: dict, seed=1) -> dict:
    """Gradients of a random projection of `out` with respect to every tensor argument."""
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    tensors = {k: v for k, v in args.items() if isinstance(v, torch.Tensor)}
    return dict(zip(tensors, torch.autograd.grad((out * w).sum(), list(tensors.values()), materialize_grads=True)))


def assert_backends_agree(layer, x: torch.Tensor) -> None:
    """`layer`'s output on x and its parameters' gradients agree with every scan direction on
    backend="torch" and on backend="triton" (set through each direction's `backend`)."""
    results = []
    for backend in ("torch", "triton"):
        for direction in layer.directions:
            direction.backend = backend
        out = layer(x)
        results.append((out, torch.autograd.grad(out.square().sum(), list(layer.parameters()))))
    (ref, g_ref), (out, g) = results
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for (name, _), a, b in zip(layer.named_parameters(), g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


class StopAfterEpochs(lightning.Callback):
    """Ends fitting after `epochs` epochs, after their checkpoints are written: a run that died there, for
    resume tests (passed to train.py as `+callbacks.stop._target_=helpers.StopAfterEpochs`)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


# torch.library.opcheck's checks; the last (AOT dispatch with dynamic shapes) costs the most under the interpreter.
OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def bench_module(name: str):
    """bench/<name>.py as a module, bench/ on sys.path as when it runs as a script (for its sibling imports)."""
    bench = str(Path(__file__).resolve().parents[1] / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    spec = importlib.util.spec_from_file_location(name, Path(bench) / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def s6_host():
    """bench/s6_host.py as a module: its operator count and its stand-in for the S6 kernels' launches."""
    return bench_module("s6_host")


SHAPE_ONLY = {"empty", "empty_like", "new_empty", "view", "transpose", "t", "select", "unsqueeze", "split_with_sizes",
              "permute", "detach", "slice", "alias"}


def computing(counts: collections.Counter) -> dict[str, int]:
    """Of the operators counted, those that compute (on a GPU, each a kernel launch of its own), not allocations
    or views."""
    return {name: n for name, n in counts.items() if name not in SHAPE_ONLY}
