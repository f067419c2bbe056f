"""`check_finite`: stop training at the first step whose loss or inputs hold NaN or infinity."""

from __future__ import annotations

import torch


def check_finite(loss: torch.Tensor, inputs: dict[str, torch.Tensor], step: int, epoch: int, batch_idx: int) -> None:
    """Raise FloatingPointError naming the step, epoch and batch, and what is not finite: an input (by its name
    in `inputs`) or the loss. One host sync per call."""
    checked = {name: t for name, t in inputs.items() if isinstance(t, torch.Tensor) and t.is_floating_point()}
    finite = torch.stack([torch.isfinite(t).all() for t in (*checked.values(), loss)])
    if bool(finite.all()):
        return
    bad = [name for name, ok in zip([*checked, "loss"], finite.tolist()) if not ok]
    raise FloatingPointError(
        f"non-finite {', '.join(bad)} at training step {step} (epoch {epoch}, batch {batch_idx}): training stopped "
        "before this step's update; last.ckpt in the run's checkpoints holds the last completed epoch. "
        "check_finite=false on the task turns this check off.")
