"""Train and test a model from the Hydra config in conf/.

    python train.py                                   # TSM2 on the bundled ETTh1, input 512, horizon 96
    python train.py experiment=tsm2_etth2 trainer=gpu   # with conf/tuned/'s settings for it, if any
    python train.py -m experiment=tsm2_etth1 data.pred_len=96,192,336,720
    python train.py ckpt_path=outputs/.../checkpoints/last.ckpt   # resume an interrupted run
    python train.py experiment=vim2_digits trainer=gpu compile=true             # torch.compile the model

Prints a metrics table, writes metrics.json into the run's output directory and prints that directory
as the last line.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from mambamixer.tasks.vision.data import cache_dir
from mambamixer.utils.callbacks import FirstStepTime
from mambamixer.utils.config_check import check_config
from mambamixer.utils.tuned import TUNED_DIR, apply_tuned

# Run folders end in 6 random hex digits (`${run_id:}` in conf/hydra), so runs started in the same second never
# share one; cached per config like Hydra's `now`, so a run (and every job of a sweep) sees one value.
OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True, replace=True)


def compile_options(cfg: DictConfig) -> dict | None:
    """torch.compile's arguments for `cfg.compile`, or None to run eagerly.

    "auto" compiles when the trainer runs on a GPU (accelerator gpu or cuda, or auto with CUDA present) and
    stays eager on CPU, where compiling costs more than it saves; true/false force it; a mapping is
    torch.compile's arguments.
    """
    setting = cfg.get("compile")
    if setting == "auto":
        accelerator = str(cfg.trainer.get("accelerator", "auto"))
        setting = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if isinstance(setting, DictConfig):
        return OmegaConf.to_container(setting)
    if not isinstance(setting, bool):
        raise ValueError(f"compile: expected auto, true, false or torch.compile's arguments, got {setting!r}")
    return {} if setting else None


def train(cfg: DictConfig) -> tuple[dict[str, float], Path]:
    """Build everything from `cfg`, fit, test the best checkpoint; return the flat metrics and output dir."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    tuned = apply_tuned(cfg, list(HydraConfig.get().overrides.task), cfg.paths.get("tuned_dir") or TUNED_DIR)
    if tuned:  # the run's .hydra/config.yaml predates them: keep them beside it
        print(f"tuned settings from {tuned['file']}: {tuned['settings']}")
        (out_dir / "tuned.yaml").write_text(OmegaConf.to_yaml(tuned))
    check_config(cfg)
    start = time.time()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, **datamodule.model_kwargs)
    options = compile_options(cfg)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    if options is not None:  # in place: parameter names, checkpoints and EMA are unchanged
        # Inductor's compiled kernels are cached across runs (next to the digits data, not in /tmp).
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
        model.compile(**options)
        callbacks.append(FirstStepTime())
    module = instantiate(cfg.task, model=model)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(out_dir))
    if trainer.max_epochs == 0 or trainer.max_steps == 0:
        if not cfg.get("ckpt_path"):
            raise ValueError("trainer.max_epochs=0 (or max_steps=0) trains nothing: give ckpt_path=... to evaluate "
                             "a checkpoint, or a positive number of epochs")
        print(f"trainer.max_epochs=0 (or max_steps=0): no training; evaluating the checkpoint {cfg.ckpt_path}")
        best = cfg.ckpt_path
    else:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        if trainer.global_step == 0:
            raise RuntimeError(
                f"training ran no optimizer step: the training loader gave {trainer.num_training_batches} batches "
                f"(data.batch_size={cfg.data.get('batch_size')}; a batch larger than the training set with drop_last "
                "gives none); lower data.batch_size or check the training split")
        best = next((c.best_model_path for c in callbacks if isinstance(c, ModelCheckpoint) and c.best_model_path),
                    None)
    trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(("test/", "val/"))}
    for c in callbacks:  # the monitored metric at the checkpoint tested (e.g. val/mse_best), for sweeps
        if isinstance(c, ModelCheckpoint) and c.monitor and c.best_model_score is not None:
            metrics[f"{c.monitor}_best"] = float(c.best_model_score)
    metrics.update({"epochs": trainer.current_epoch, "parameters": sum(p.numel() for p in model.parameters()),
                    "wall_time_s": round(time.time() - start, 1)})
    for callback in callbacks:  # with torch.compile: the first step (which compiles) and the later steps' median
        if isinstance(callback, FirstStepTime):
            metrics.update(callback.summary())
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics, out_dir


def report(metrics: dict[str, float], out_dir: Path) -> None:
    table = Table(title="metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if key.startswith(("test/", "val/")) else str(value))
    Console().print(table)
    print(out_dir)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics, out_dir = train(cfg)
    report(metrics, out_dir)
    return metrics.get(cfg.get("optimized_metric", "test/mse"))


if __name__ == "__main__":
    main()
