"""`check_finite`: stop training at the first step whose loss or inputs hold NaN or infinity."""

from __future__ import annotations

from collections.abc import Callable

import torch


def check_finite(loss: torch.Tensor, inputs: dict[str, torch.Tensor], step: int, epoch: int, batch_idx: int,
                 all_processes: Callable[[bool], bool] = bool) -> None:
    """Raise FloatingPointError naming the step, epoch and batch, and what is not finite: an input (by its name
    in `inputs`) or the loss. One host sync per call. `all_processes` turns this process's verdict into every
    process's (Lightning's `strategy.reduce_boolean_decision`), so under DDP all processes stop together
    rather than leaving the others waiting in the next gradient all-reduce."""
    checked = {name: t for name, t in inputs.items() if isinstance(t, torch.Tensor) and t.is_floating_point()}
    finite = torch.stack([torch.isfinite(t).all() for t in (*checked.values(), loss)])
    if all_processes(bool(finite.all())):
        return
    bad = [name for name, ok in zip([*checked, "loss"], finite.tolist()) if not ok] or ["values in another process"]
    raise FloatingPointError(
        f"non-finite {', '.join(bad)} at training step {step} (epoch {epoch}, batch {batch_idx}): training stopped "
        "before this step's update; last.ckpt in the run's checkpoints holds the last completed epoch. "
        "check_finite=false on the task turns this check off.")
