"""`add_moe_loss`: a hybrid model's mixture-of-experts load-balancing loss joined to the training loss."""

from __future__ import annotations

import lightning as L
import torch

from ..mixer.moe import moe_aux_loss


def add_moe_loss(module: L.LightningModule, loss: torch.Tensor, weight: float, batch_size: int) -> torch.Tensor:
    """loss + weight * the load-balancing loss of every `MoEMLP` in `module.model` from this step's forward,
    which is logged as train/moe_aux; loss itself for a model without experts."""
    aux = moe_aux_loss(module.model)
    if aux is None:
        return loss
    module.log("train/moe_aux", aux, batch_size=batch_size)
    return loss + weight * aux
