"""Train and test a model from the Hydra config in conf/.

    python train.py                                   # TSM2 on the bundled ETTh1, input 512, horizon 96
    python train.py experiment=tsm2_etth2 trainer=gpu
    python train.py -m experiment=tsm2_etth1 data.pred_len=96,192,336,720
    python train.py ckpt_path=outputs/.../checkpoints/last.ckpt   # resume an interrupted run
    python train.py experiment=vim2_tiny_imagenet trainer=gpu compile=true      # torch.compile the model

Prints a metrics table, writes metrics.json into the run's output directory and prints that directory
as the last line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from mambamixer.tasks.config_check import check_config


def train(cfg: DictConfig) -> tuple[dict[str, float], Path]:
    """Build everything from `cfg`, fit, test the best checkpoint; return the flat metrics and output dir."""
    check_config(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    start = time.time()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, **datamodule.model_kwargs)
    if cfg.get("compile"):  # in place: parameter names, checkpoints and EMA are unchanged
        model.compile(**(OmegaConf.to_container(cfg.compile) if isinstance(cfg.compile, DictConfig) else {}))
    module = instantiate(cfg.task, model=model)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(out_dir))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    best = next((c.best_model_path for c in callbacks if isinstance(c, ModelCheckpoint) and c.best_model_path), None)
    trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(("test/", "val/"))}
    metrics.update({"epochs": trainer.current_epoch, "parameters": sum(p.numel() for p in model.parameters()),
                    "wall_time_s": round(time.time() - start, 1)})
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
