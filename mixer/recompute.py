"""`recompute_saved`: a tensor that autograd would keep for the backward, formed again there instead."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import NamedTuple

import torch


class _View(NamedTuple):
    """What is kept of a saved view of the recomputed tensor: its geometry, offset from the tensor's start."""

    shape: torch.Size
    stride: tuple[int, ...]
    offset: int


class _Kept(NamedTuple):
    """Any other saved tensor, as the hooks outside packed it (or itself, without any)."""

    packed: object


def _extent(t: torch.Tensor) -> tuple[int, int]:
    """The first and last storage elements a (non-empty) tensor can touch."""
    start = t.storage_offset()
    return start, start + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))


class _RecomputeHooks(torch.autograd.graph.saved_tensors_hooks):
    """The hooks of `recompute_saved`; they hold value's geometry, not value."""

    def __init__(self, value: torch.Tensor, make: Callable[[], torch.Tensor], inputs: tuple[torch.Tensor, ...]):
        storage, (first, last) = value.untyped_storage().data_ptr(), _extent(value)
        geometry = (value.shape, value.stride(), value.dtype)
        device = value.device.type
        autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        versions = [t._version for t in inputs]
        outer = torch._C._autograd._top_saved_tensors_default_hooks(False)
        state = {"full": None, "packed": 0, "unpacked": 0}

        def pack(t: torch.Tensor):
            if (t.numel() and t.untyped_storage().data_ptr() == storage and first <= _extent(t)[0]
                    and _extent(t)[1] <= last):
                state["packed"] += 1
                return _View(t.shape, t.stride(), t.storage_offset() - first)
            return _Kept(t if outer is None else outer[0](t))

        def unpack(packed):
            if isinstance(packed, _Kept):
                return packed.packed if outer is None else outer[1](packed.packed)
            if [t._version for t in inputs] != versions:
                raise RuntimeError("recompute_saved: a tensor that the backward recomputes from was modified in "
                                   "place after the forward")
            if state["full"] is None:
                with torch.no_grad(), torch.autocast(device, dtype=autocast[1], enabled=autocast[0]):
                    full = make()
                if (full.shape, full.stride(), full.dtype) != geometry:
                    raise RuntimeError(f"recompute_saved: make() gave {tuple(full.shape)}, strides {full.stride()}, "
                                       f"{full.dtype}; the forward's tensor was {tuple(geometry[0])}, strides "
                                       f"{geometry[1]}, {geometry[2]}")
                state["full"] = full
            full = state["full"]
            state["unpacked"] += 1
            if state["unpacked"] == state["packed"]:  # every saved view has been taken: let the tensor go
                state["full"], state["unpacked"] = None, 0
            return full.as_strided(packed.shape, packed.stride, full.storage_offset() + packed.offset)

        super().__init__(pack, unpack)


def recompute_saved(value: torch.Tensor, make: Callable[[], torch.Tensor],
                    inputs: tuple[torch.Tensor, ...]) -> contextlib.AbstractContextManager:
    """A context in which autograd keeps no tensor that is `value` or a view of it: the backward forms value
    again with `make()` (without grad, under the autocast state of the forward, once for all the views it takes)
    and takes the same views of it. Other saved tensors go to any hooks outside the context, as without it.

    make: a function of `inputs` that autograd keeps anyway (and not of value: a reference to it would keep
    it) giving value's values, shape, strides and dtype, e.g. the GEMM or affine map that formed value. A
    change in place to one of `inputs` after the forward makes the backward raise, as autograd's own check
    does. Eager mode: while torch.compile traces, or without grad, it does nothing (the compiler chooses
    what to recompute).
    """
    if torch.compiler.is_compiling() or not torch.is_grad_enabled():
        return contextlib.nullcontext()
    return _RecomputeHooks(value, make, inputs)
