"""`ForecastingModule`: MSE training of a forecaster, MSE / MAE on val and test with torchmetrics."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from ...utils.cuda_graph import GraphedTraining
from ...utils.finite import check_finite
from ...utils.moe_loss import add_moe_loss


class ForecastingModule(L.LightningModule):
    """Wraps a forecaster `model(x, covariates=None) -> (batch, pred_len, n_vars)`.

    Loss and metrics compare the last `y.shape[-1]` predicted variates with `y` (all variates for
    features M and S, the target alone for MS). `optimizer` and `scheduler` are partials from the config
    (`torch.optim.AdamW`, a `torch.optim.lr_scheduler` class, ...); the scheduler steps every epoch.
    `check_finite`: stop training at the first step whose loss or inputs are not finite
    (`mambamixer.utils.finite.check_finite`). A hybrid model's mixture-of-experts load-balancing loss joins
    the training loss with weight `moe_aux_weight` (Switch Transformer's 0.01). `cuda_graphs`: on a single
    GPU, replay the model's training forward and backward from CUDA graphs (`mambamixer.utils.cuda_graph`).
    """

    def __init__(self, model: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 check_finite: bool = True, moe_aux_weight: float = 0.01, cuda_graphs: bool = True):
        super().__init__()
        self.model, self.optimizer_factory, self.scheduler_factory = model, optimizer, scheduler
        self.cuda_graphs = cuda_graphs
        self._graphed = None  # built at the first training step, when the device and world size are known
        self.check_finite, self.moe_aux_weight = check_finite, moe_aux_weight
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
        self.val_metrics, self.test_metrics = metrics.clone(prefix="val/"), metrics.clone(prefix="test/")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._predict(self.model, batch)

    @staticmethod
    def _predict(model: Callable, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """model's forecast of the variates `y` holds."""
        return model(batch["x"], batch.get("covariates"))[..., -batch["y"].shape[-1]:]

    def training_step(self, batch, batch_idx):
        if self._graphed is None:  # under DDP the gradient hooks must see every backward: eager
            self._graphed = GraphedTraining(self.model, self.cuda_graphs and self.trainer.world_size == 1)
        loss = F.mse_loss(self._predict(self._graphed, batch), batch["y"])
        loss = add_moe_loss(self, loss, self.moe_aux_weight, len(batch["y"]))
        if self.check_finite:
            check_finite(loss, batch, self.global_step, self.current_epoch, batch_idx,
                         self.trainer.strategy.reduce_boolean_decision)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def _evaluate(self, batch, metrics):
        pred = self(batch)
        metrics.update(pred.flatten(), batch["y"].flatten())
        self.log_dict(metrics, prog_bar=True, batch_size=len(pred))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metrics)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metrics)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer),
                                                          "interval": "epoch"}}
