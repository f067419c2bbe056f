"""`GraphedTraining`: a model's training forward and backward replayed from CUDA graphs.

A forecaster's training step at small batch sizes is bound by the host: launching a few hundred small kernels
takes longer than running them. `torch.cuda.make_graphed_callables` captures the forward and the backward once
and replays each with one launch. Parameters, gradients (accumulated into `.grad` as usual), dropout (the graphs
draw from the CUDA generator as the eager ops would) and the optimizer are untouched.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from ..mixer.moe import MoEMLP


class _Positional(nn.Module):
    """model(*args) with the None arguments left out, as make_graphed_callables needs tensors only."""

    def __init__(self, model: nn.Module, present: tuple[bool, ...]):
        super().__init__()
        self.model, self.present = model, present

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        given = iter(tensors)
        return self.model(*(next(given) if p else None for p in self.present))


class GraphedTraining:
    """`graphed(*args)`: `model(*args)`, replayed from CUDA graphs when it can be.

    The graphs are captured on the first call that qualifies: `enabled`, training mode, gradients enabled, no
    CUDA autocast, CUDA inputs, a model not compiled and without mixture-of-experts layers (their routing and
    auxiliary loss depend on the data). They are replayed for qualifying calls with arguments of exactly that
    call's shapes, dtypes and devices; any other call (the last partial batch, evaluation) runs the model
    eagerly. The capture leaves the CUDA random state as it found it, so a run draws the same dropout masks
    with or without graphs. If the capture fails (an op that cannot be captured), a warning says why and the
    model runs eagerly from then on.
    """

    def __init__(self, model: nn.Module, enabled: bool = True):
        self.model, self.enabled = model, enabled and not any(isinstance(m, MoEMLP) for m in model.modules())
        self._signature, self._graphed = None, None

    @staticmethod
    def _signature_of(args) -> tuple:
        return tuple(None if a is None else (a.shape, a.dtype, a.device) for a in args)

    def model_qualifies(self) -> bool:
        """Whether the model, as it runs now, can be captured (the inputs must also be on a GPU)."""
        return (self.enabled and self.model.training and torch.is_grad_enabled()
                and not torch.is_autocast_enabled("cuda")  # autocast's weight cache cannot be captured
                and getattr(self.model, "_compiled_call_impl", None) is None)

    def _capture(self, args) -> None:
        tensors = tuple(a.clone() for a in args if a is not None)  # the graphs' own input buffers
        device = tensors[0].device
        rng = torch.cuda.get_rng_state(device)
        try:
            wrapper = _Positional(self.model, tuple(a is not None for a in args))
            self._graphed = torch.cuda.make_graphed_callables(wrapper, tensors, allow_unused_input=True)
        except RuntimeError as error:  # an op that syncs with the host or cannot be captured
            warnings.warn(f"CUDA graphs: the training step could not be captured ({error}); it runs eagerly",
                          stacklevel=3)
            self.enabled, self._graphed = False, None
        finally:
            torch.cuda.set_rng_state(rng, device)
        self._signature = self._signature_of(args)

    def __call__(self, *args: torch.Tensor | None) -> torch.Tensor:
        on_gpu = all(a is None or (isinstance(a, torch.Tensor) and a.is_cuda) for a in args)
        if self._graphed is None and on_gpu and self.model_qualifies():
            self._capture(args)
        if self._graphed is not None and self._signature_of(args) == self._signature and self.model_qualifies():
            return self._graphed(*(a for a in args if a is not None))
        return self.model(*args)
