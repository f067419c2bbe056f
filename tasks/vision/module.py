"""`ClassificationModule`: image classification with the DeiT/timm recipe; top-1/top-5 from torchmetrics."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from timm.loss import SoftTargetCrossEntropy
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from ...utils.finite import check_finite
from ...utils.moe_loss import add_moe_loss


class ClassificationModule(L.LightningModule):
    """Wraps a classifier `model(images) -> logits (batch, num_classes)`.

    Learning rate scaled by the global batch: lr = base_lr * batch_size * world size * accumulation /
    base_batch (DeiT: 5e-4 per 512 images), logged at the start of training with the global batch.
    `optimizer`: a partial optimizer (AdamW) given parameter groups, weight decay on weights only (norms,
    biases, 1-D parameters and the model's `no_weight_decay()` names go without). Schedule: cosine per step
    with `warmup_epochs` of linear warmup (timm's CosineLRScheduler). Loss: soft-target cross entropy for
    Mixup/CutMix targets, else cross entropy with `label_smoothing`. Val/test: loss, top-1 and top-5.
    `check_finite`: stop training at the first step whose loss or images are not finite
    (`mambamixer.utils.finite.check_finite`). A hybrid model's mixture-of-experts load-balancing loss joins
    the training loss with weight `moe_aux_weight` (Switch Transformer's 0.01).
    """

    def __init__(self, model: nn.Module, optimizer: Callable, base_lr: float = 5e-4, base_batch: int = 512,
                 weight_decay: float = 0.05, warmup_epochs: float = 5, warmup_lr: float = 1e-6, min_lr: float = 1e-5,
                 label_smoothing: float = 0.1, check_finite: bool = True, moe_aux_weight: float = 0.01):
        super().__init__()
        self.check_finite, self.moe_aux_weight = check_finite, moe_aux_weight
        self.model, self.optimizer_factory = model, optimizer
        self.base_lr, self.base_batch, self.weight_decay = base_lr, base_batch, weight_decay
        self.warmup_epochs, self.warmup_lr, self.min_lr = warmup_epochs, warmup_lr, min_lr
        self.label_smoothing = label_smoothing
        self.soft_loss = SoftTargetCrossEntropy()
        num_classes = model.num_classes
        top5 = min(5, num_classes)
        metrics = MetricCollection({"top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                                    "top5": MulticlassAccuracy(num_classes, top_k=top5, average="micro")})
        self.val_metrics, self.test_metrics = metrics.clone(prefix="val/"), metrics.clone(prefix="test/")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        logits = self(images)
        if targets.dim() == 2:  # Mixup/CutMix soft targets, label smoothing included
            loss = self.soft_loss(logits, targets)
        else:
            loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        loss = add_moe_loss(self, loss, self.moe_aux_weight, len(images))
        if self.check_finite:
            check_finite(loss, {"images": images, "targets": targets}, self.global_step, self.current_epoch, batch_idx,
                         self.trainer.strategy.reduce_boolean_decision)
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, batch_size=len(images), sync_dist=True)
        return loss

    def _evaluate(self, batch, metrics, stage):
        images, targets = batch
        logits = self(images)
        self.log(f"{stage}/loss", F.cross_entropy(logits, targets), batch_size=len(images), sync_dist=True)
        metrics.update(logits, targets)
        self.log_dict(metrics, prog_bar=True, batch_size=len(images))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metrics, "test")

    def global_batch(self) -> int:
        trainer = self.trainer
        batch_size = getattr(trainer.datamodule, "batch_size", None)
        if batch_size is None:
            raise ValueError("trainer.datamodule: the learning rate is scaled by the global batch, so fit with a "
                             "datamodule that has a batch_size")
        return batch_size * trainer.world_size * trainer.accumulate_grad_batches

    def configure_optimizers(self):
        global_batch = self.global_batch()
        lr = self.base_lr * global_batch / self.base_batch
        no_decay = self.model.no_weight_decay() if hasattr(self.model, "no_weight_decay") else ()
        groups = param_groups_weight_decay(self.model, weight_decay=self.weight_decay, no_weight_decay_list=no_decay)
        optimizer = self.optimizer_factory(params=groups, lr=lr)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(total * self.warmup_epochs / max(self.trainer.max_epochs, 1)) if self.trainer.max_epochs > 0 else 0
        scheduler = CosineLRScheduler(optimizer, t_initial=total, lr_min=self.min_lr, warmup_t=min(warmup, total - 1),
                                      warmup_lr_init=self.warmup_lr, warmup_prefix=True, t_in_epochs=False)
        rank_zero_info(f"global batch {global_batch} -> peak lr {lr:.3g} (base_lr {self.base_lr} per "
                       f"{self.base_batch}), {total} steps, {warmup} warmup")
        self.hparams.update(global_batch=global_batch, lr=lr)
        if self.logger is not None:
            self.logger.log_hyperparams({"global_batch": global_batch, "lr": lr, "total_steps": total,
                                         "warmup_steps": warmup})
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        scheduler.step_update(num_updates=self.global_step)
