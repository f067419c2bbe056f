"""Callbacks shared by every task."""

from __future__ import annotations

import os
import random
import time

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class RNGStateCheckpoint(L.Callback):
    """Saves the Python, NumPy, torch and CUDA random states in every checkpoint and restores them on
    resume, so dropout and augmentation after a resume draw what the uninterrupted run would have."""

    def state_dict(self) -> dict:
        # Tensors, tuples and numbers only, so checkpoints load with torch.load(weights_only=True).
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos,
                                                        has_gauss, cached), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class FirstStepTime(L.Callback):
    """Wall time of the first training step and the median of the next `steps`: with torch.compile the
    first step holds the compilation, so their difference is what compiling cost this run."""

    def __init__(self, steps: int = 20):
        self.steps, self.times, self._start = steps, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if len(self.times) <= self.steps:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if len(self.times) <= self.steps:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._start)

    def summary(self) -> dict[str, float]:
        """{"first_train_step_s", "train_step_s"} (the later steps' median), or {} before two steps ran."""
        if len(self.times) < 2:
            return {}
        return {"first_train_step_s": round(self.times[0], 2),
                "train_step_s": round(float(np.median(self.times[1:])), 4)}


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, made so that a resumed run ends where the uninterrupted one would.

    - Resuming into another run folder keeps the best score and the top-k checkpoints with their scores
      (Lightning keeps only the best path then, so the first epoch after a resume counted as best and the
      run was tested on it). The earlier folder's files are never deleted: Lightning removes files inside
      `dirpath` only.
    - `last.ckpt` (with `save_last`) holds the last completed epoch: it is written after every epoch, not only
      when a top-k checkpoint is, so a resume redoes at most the epoch that was interrupted.
    - Each checkpoint is written to `<name>.partial` and renamed, so a run killed while writing leaves the
      previous file whole.
    """

    _last_saved_step = -1

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({**state_dict, "dirpath": self.dirpath})  # restore everything, any folder

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch_end = not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        if epoch_end:
            self._save_last_every_epoch(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        epoch_end = not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(
            trainer)
        super().on_validation_end(trainer, pl_module)
        if epoch_end:
            self._save_last_every_epoch(trainer)

    def _save_last_every_epoch(self, trainer) -> None:
        if self.save_last and self._last_saved_step != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_saved_step = trainer.global_step

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath
