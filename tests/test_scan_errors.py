"""Bad arguments to the scan ops raise ValueError naming the argument and what was expected."""

import pytest
import torch

from mambamixer.kernels import (
    _backend,
    mamba_chunk_scan_combined,
    selective_scan_bidirectional_fn,
    selective_scan_fn,
    selective_state_update,
    ssd_state_update,
)
from mambamixer.kernels.selective_scan import interface

from helpers import s6_inputs, ssd_inputs

S6_CASES = [
    ("u", dict(u=torch.randn(2, 4)), r"u: expected shape \(batch, dim, L\)"),
    ("u", dict(u=torch.randn(2, 4, 0)), r"u: the sequence length L must be at least 1"),
    ("u", dict(u=[1.0]), r"u: expected a tensor"),
    ("delta", dict(delta=torch.randn(2, 4, 6)), r"delta: expected shape \(batch, dim, L\) = \(2, 4, 7\)"),
    ("A", dict(A=torch.randn(3, 3)), r"A: expected shape \(dim, N\) = \(4, \?\)"),
    ("A", dict(A=torch.randn(4, 3, dtype=torch.complex64)), r"A: expected a real floating dtype"),
    ("B", dict(B=torch.randn(2, 2, 7)),
     r"B: expected shape \(batch, N, L\), \(batch, G, N, L\) or \(dim, N\) = \(2, 3, 7\)"),
    ("B", dict(B=torch.randn(4, 2)), r"B: expected shape \(dim, N\) \(time-invariant\) = \(4, 3\)"),
    ("C", dict(C=torch.randn(4, 3), backend="triton"), r"C: the Triton kernels take time-varying B and C"),
    ("B", dict(B=torch.randn(2, 3, 3, 7)), r"B: the number of groups \(3\) must divide dim \(4\)"),
    ("C", dict(C=torch.randn(2, 3, 8)), r"C: expected shape"),
    ("D", dict(D=torch.randn(5)), r"D: expected shape \(dim,\) = \(4\)"),
    ("z", dict(z=torch.randn(2, 4, 8)), r"z: expected shape \(batch, dim, L\) = \(2, 4, 7\)"),
    ("delta_bias", dict(delta_bias=torch.randn(4, 1)), r"delta_bias: expected shape \(dim,\)"),
    ("u", dict(u=torch.randint(0, 3, (2, 4, 7))), r"u: expected a real floating dtype"),
    ("backend", dict(backend="cuda"), r"backend: expected one of"),
    ("backend", dict(backend="triton", u=torch.randn(2, 4, 7, dtype=torch.float64)),
     r"backend: 'triton' takes float32, float16 or bfloat16 inputs, got float64"),
]


@pytest.mark.parametrize("name,change,message", S6_CASES, ids=[c[0] + str(i) for i, c in enumerate(S6_CASES)])
def test_selective_scan_errors(name, change, message):
    a = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in s6_inputs().items()}
    with pytest.raises(ValueError, match=message):
        selective_scan_fn(**{**a, **change})


def test_selective_scan_checks_run_once_per_signature_that_passed(monkeypatch):
    """Arguments with the dtypes, devices and shapes of a call that passed are not checked again; arguments
    that differ in any of them are (and here rejected)."""
    a = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in s6_inputs(dim=6).items()}
    checked, real = [], interface._check
    monkeypatch.setattr(interface, "_PASSED", set())
    monkeypatch.setattr(interface, "_check", lambda *args: checked.append(1) or real(*args))
    for _ in range(3):
        selective_scan_fn(**a)
    assert len(checked) == 1
    for change in (dict(D=a["D"].to("meta")), dict(D=a["D"].int()), dict(D=a["D"][:5]), dict(D=a["D"].tolist())):
        with pytest.raises(ValueError, match="D: expected"):
            selective_scan_fn(**{**a, **change})
    assert len(checked) == 5


def test_triton_backend_on_cpu_without_the_interpreter_is_named(monkeypatch):
    monkeypatch.setattr(_backend, "INTERPRET", False)
    a = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in s6_inputs().items()}
    with pytest.raises(ValueError, match=r"backend: 'triton' needs CUDA tensors \(got cpu\), or TRITON_INTERPRET=1"):
        selective_scan_fn(**a, backend="triton")


def test_selective_scan_device_mismatch_is_named():
    a = s6_inputs()
    a["D"] = a["D"].to("meta")
    with pytest.raises(ValueError, match=r"D: expected device cpu"):
        selective_scan_fn(**a)


SSD_CASES = [
    ("x", dict(x=torch.randn(2, 7, 4)), r"x: expected shape \(batch, L, H, P\)"),
    ("dt", dict(dt=torch.randn(2, 7, 3)), r"dt: expected shape \(batch, L, H\) = \(2, 7, 4\)"),
    ("A", dict(A=torch.randn(4, 1)), r"A: expected shape \(H,\) = \(4\)"),
    ("B", dict(B=torch.randn(2, 7, 3, 5)), r"B: the number of groups \(3\) must divide H"),
    ("C", dict(C=torch.randn(2, 7, 1, 4)), r"B, C: expected the same shape \(batch, L, G, N\), got \(2, 7, 1, 5\) and "
                                           r"\(2, 7, 1, 4\)"),
    ("B", dict(B=torch.randn(2, 7, 1, 4)), r"B, C: expected the same shape \(batch, L, G, N\), got \(2, 7, 1, 4\) and "
                                           r"\(2, 7, 1, 5\)"),
    ("C", dict(C=torch.randn(2, 7, 1, 5, dtype=torch.float64).to(torch.int32)), r"C: expected a real floating dtype"),
    ("chunk_size", dict(chunk_size=0), r"chunk_size: expected a positive int"),
    ("chunk_size", dict(chunk_size=8.0), r"chunk_size: expected a positive int"),
    ("D", dict(D=torch.randn(4, 2)), r"D: expected shape \(H, P\) = \(4, 3\)"),
    ("z", dict(z=torch.randn(2, 7, 4, 2)), r"z: expected shape"),
    ("dt_bias", dict(dt_bias=torch.randn(3)), r"dt_bias: expected shape \(H,\)"),
    ("initial_states", dict(initial_states=torch.randn(2, 4, 3, 4)), r"initial_states: expected shape"),
    ("dt_limit", dict(dt_limit=(0.5, 0.1)), r"dt_limit: expected \(low, high\)"),
    ("backend", dict(backend="cuda"), r"backend: expected one of"),
    ("backend", dict(backend="triton", x=torch.randn(2, 7, 4, 3, dtype=torch.float64)),
     r"backend: 'triton' takes float32, float16 or bfloat16 inputs, got float64"),
]


@pytest.mark.parametrize("name,change,message", SSD_CASES, ids=[c[0] + str(i) for i, c in enumerate(SSD_CASES)])
def test_ssd_errors(name, change, message):
    a = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in ssd_inputs().items()}
    with pytest.raises(ValueError, match=message):
        mamba_chunk_scan_combined(**{**a, "chunk_size": 8, **change})


def test_step_errors():
    state = torch.zeros(2, 4, 3)
    x, dt, A, B = torch.randn(2, 4), torch.randn(2, 4), -torch.rand(4, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, dim\) = \(2, 4\)"):
        selective_state_update(state, x[:, :3], dt, A, B, B)
    with pytest.raises(ValueError, match=r"B: the number of groups \(3\) must divide dim"):
        selective_state_update(state, x, dt, A, torch.randn(2, 3, 3), B)
    ssd_state = torch.zeros(2, 4, 3, 5)
    with pytest.raises(ValueError, match=r"dt: expected shape \(batch, H\) = \(2, 4\)"):
        ssd_state_update(ssd_state, torch.randn(2, 4, 3), torch.randn(2, 3), -torch.rand(4), torch.randn(2, 1, 5),
                         torch.randn(2, 1, 5))


def _pairs(**change):
    f, b = s6_inputs(seed=1), s6_inputs(seed=2)
    pairs = {k: (f[k], b[k]) for k in ("u", "delta", "A", "B", "C", "D", "delta_bias")}
    return {**pairs, "z": f["z"], "delta_softplus": True, **change}


@pytest.mark.parametrize("change,message", [
    (dict(u=torch.randn(2, 4, 7)), r"u: expected a pair \(forward direction, backward direction\)"),
    (dict(D=(torch.randn(4), None)), r"D: give it for both directions or for neither"),
    (dict(u=(torch.randn(2, 4, 7, dtype=torch.float64), torch.randn(2, 4, 8, dtype=torch.float64))),
     r"backward direction: delta: expected shape \(batch, dim, L\) = \(2, 4, 8\)"),
    (dict(z=torch.randn(2, 4, 6, dtype=torch.float64)), r"z: expected shape \(batch, dim, L\) = \(2, 4, 7\)"),

    (dict(column_grid_height=2), r"column_grid_height: expected a positive int dividing L=7, got 2"),
    (dict(column_grid_height=0), r"column_grid_height: expected a positive int dividing L=7, got 0"),
    (dict(column_grid_height=7.0), r"column_grid_height: expected a positive int dividing L=7, got 7.0"),
])
def test_bidirectional_errors(change, message):
    with pytest.raises(ValueError, match=message):
        selective_scan_bidirectional_fn(**_pairs(**change))
