"""`ForecastPlot`: after testing, a PNG of history, truth and forecast for a few test windows."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


class ForecastPlot(L.Callback):
    """Plots the target variate (the last column, in its original units) of `windows` test windows spread
    over the test split, into `forecast.png` in the logger's directory."""

    def __init__(self, windows: int = 3, filename: str = "forecast.png"):
        self.windows, self.filename = windows, filename

    @torch.no_grad()
    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        data = trainer.datamodule.dataset("test")
        picks = torch.linspace(0, len(data) - 1, self.windows).long().tolist()
        batch = {k: torch.stack([data[i][k] for i in picks]).to(module.device) for k in data[0]}
        pred = module(batch).float().cpu()
        mean, std = float(trainer.datamodule.mean[-1]), float(trainer.datamodule.std[-1])
        history, truth = batch["x"][..., -1].cpu() * std + mean, batch["y"][..., -1].cpu() * std + mean
        forecast = pred[..., -1] * std + mean
        fig, axes = plt.subplots(self.windows, 1, figsize=(10, 2.6 * self.windows), squeeze=False)
        seq_len = history.shape[1]
        future = range(seq_len, seq_len + truth.shape[1])
        for ax, i, h, t, f in zip(axes[:, 0], picks, history, truth, forecast):
            ax.plot(range(seq_len), h, color="0.4", lw=1, label="history")
            ax.plot(future, t, color="tab:blue", lw=1.2, label="truth")
            ax.plot(future, f, color="tab:red", lw=1.2, label="forecast")
            ax.set_title(f"test window {i}: {trainer.datamodule.columns[-1]}", fontsize=9)
        axes[0, 0].legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        out = Path(trainer.log_dir or trainer.default_root_dir) / self.filename
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
        plt.close(fig)
