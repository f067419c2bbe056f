"""Packed variable-length sequences in the SSD scan (seq_idx, cu_seqlens, return_varlen_states) on the
reference, the chunked PyTorch path and the Triton kernels (interpreter): each sequence as if run alone."""

import pytest
import torch

from mambamixer.kernels import mamba_chunk_scan_combined, mamba_chunk_scan_ref

from helpers import grads, rel_err, ssd_inputs, with_grad

SEQUENCE = ("x", "dt", "B", "C", "z")  # the arguments with an L axis
# Lengths that put starts on the Triton kernels' 32-step chunk edges (31, 32, 33, 64) and a one-step sequence.
LENGTHS = [31, 1, 1, 31, 6]


def packed(lengths, seed=2, **kw):
    """Float64 arguments of one packed row (batch 1), with cu_seqlens and seq_idx."""
    a = ssd_inputs(batch=1, length=sum(lengths), heads=4, groups=2, seed=seed, **kw)
    cu = torch.tensor([0, *lengths]).cumsum(0)
    return a, cu, torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))[None]


def separately(a, cu, reverse):
    """Each sequence through the reference alone (the initial state into the first one in scan order): the
    outputs concatenated, and each one's final state."""
    outs, finals = [], []
    bounds = list(zip(cu[:-1].tolist(), cu[1:].tolist()))
    first = len(bounds) - 1 if reverse else 0
    for i, (s, e) in enumerate(bounds):
        part = {k: v[:, s:e] if k in SEQUENCE else v for k, v in a.items()}
        part["initial_states"] = a["initial_states"] if i == first else None
        out, final = mamba_chunk_scan_ref(**part, return_final_states=True, reverse=reverse)
        outs.append(out)
        finals.append(final[0])
    return torch.cat(outs, 1), torch.stack(finals)


@pytest.mark.parametrize("reverse", [False, True])
def test_reference_runs_each_sequence_alone(reverse):
    a, cu, seq = packed(LENGTHS)
    out, varlen = mamba_chunk_scan_ref(**a, seq_idx=seq, cu_seqlens=cu, return_varlen_states=True, reverse=reverse)
    want, finals = separately(a, cu, reverse)
    assert rel_err(out, want) < 1e-14 and rel_err(varlen, finals) < 1e-14


@pytest.mark.parametrize("backend,chunk_size", [("torch", 1), ("torch", 8), ("torch", 64), ("triton", 32)])
@pytest.mark.parametrize("reverse", [False, True])
def test_packed_batch_matches_reference(backend, chunk_size, reverse):
    """Outputs, final state, varlen states and every gradient against the float64 reference."""
    a, cu, seq = packed(LENGTHS)
    tol = 1e-12 if backend == "torch" else 2e-5
    mine = with_grad(a if backend == "torch" else {k: v.float() if isinstance(v, torch.Tensor) else v
                                                   for k, v in a.items()})
    ref = with_grad(a)
    out, final, varlen = mamba_chunk_scan_combined(**mine, chunk_size=chunk_size, seq_idx=seq, cu_seqlens=cu,
                                                   return_final_states=True, return_varlen_states=True,
                                                   reverse=reverse, backend=backend)
    r_out, r_final, r_varlen = mamba_chunk_scan_ref(**ref, seq_idx=seq, cu_seqlens=cu, return_final_states=True,
                                                    return_varlen_states=True, reverse=reverse)
    assert not varlen.requires_grad and varlen.shape == (len(LENGTHS), 4, 3, 5)
    assert rel_err(out, r_out) < tol and rel_err(final, r_final) < tol and rel_err(varlen, r_varlen) < tol
    g_mine, g_ref = grads(out.double(), mine), grads(r_out, ref)
    for name in g_ref:
        assert rel_err(g_mine[name], g_ref[name]) < 10 * tol, name


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_seq_idx_per_row_without_cu_seqlens(backend):
    """Batch 2, each row packed differently, ids that repeat out of order (a change starts a sequence)."""
    a = ssd_inputs(batch=2, length=40, heads=2, groups=1, seed=4)
    seq = torch.zeros(2, 40, dtype=torch.int64)
    seq[0, 10:], seq[0, 33:] = 1, 0
    seq[1, 1:], seq[1, 2:] = 5, 7
    exact = dict(a)
    if backend == "triton":
        a = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    out = mamba_chunk_scan_combined(**a, chunk_size=16, seq_idx=seq, backend=backend)
    assert rel_err(out, mamba_chunk_scan_ref(**exact, seq_idx=seq)) < (1e-12 if backend == "torch" else 2e-6)
    alone = mamba_chunk_scan_ref(**{k: v[:1, 33:] if k in SEQUENCE else v for k, v in exact.items()
                                    if k != "initial_states"})
    assert rel_err(out[:1, 33:], alone) < 2e-6  # the third sequence of row 0 sees nothing before it


def test_seq_idx_from_cu_seqlens_alone():
    a, cu, seq = packed([5, 9])
    with_cu = mamba_chunk_scan_combined(**a, chunk_size=4, cu_seqlens=cu)
    assert rel_err(with_cu, mamba_chunk_scan_ref(**a, seq_idx=seq)) < 1e-12


@pytest.mark.parametrize("change,message", [
    (dict(seq_idx=torch.zeros(1, 14)), r"seq_idx: expected an integer tensor of shape \(batch, L\)"),
    (dict(seq_idx=torch.zeros(1, 13, dtype=torch.int64)), r"seq_idx: expected shape \(batch, L\) = \(1, 14\)"),
    (dict(cu_seqlens=torch.tensor([0, 5, 13])), r"cu_seqlens: expected \(num_seqs \+ 1,\) boundaries from 0 to L = 14"),
    (dict(cu_seqlens=torch.tensor([0, 5, 5, 14])), r"cu_seqlens: expected strictly increasing boundaries"),
    (dict(return_varlen_states=True), r"return_varlen_states: needs cu_seqlens"),
    (dict(seq_idx=torch.zeros(1, 14, dtype=torch.int64), cu_seqlens=torch.tensor([0, 5, 14])),
     r"seq_idx, cu_seqlens: they place the sequence boundaries differently"),
])
def test_errors_name_the_argument(change, message):
    a, _, _ = packed([5, 9])
    with pytest.raises(ValueError, match=message):
        mamba_chunk_scan_combined(**a, chunk_size=4, **change)


def test_cu_seqlens_needs_batch_one():
    a = ssd_inputs(batch=2, length=14)
    with pytest.raises(ValueError, match=r"cu_seqlens: packed sequences take batch 1"):
        mamba_chunk_scan_combined(**a, chunk_size=4, cu_seqlens=torch.tensor([0, 5, 14]))
