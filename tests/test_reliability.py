"""Runs that resume exactly and fail loudly: checkpoints across run folders, last.ckpt every epoch, atomic
writes, non-finite steps, config values checked by type, dated CSVs, feature indices."""

import warnings
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
import torch.nn as nn
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

import mambamixer  # noqa: F401  (registers ViM2)
from mambamixer.tasks.forecasting.data import ForecastingDataModule, read_csv
from mambamixer.tasks.forecasting.module import ForecastingModule
from mambamixer.utils.callbacks import RunCheckpoint
from mambamixer.utils.config_check import check_config
from mambamixer.utils.finite import check_finite

ROOT = Path(__file__).resolve().parents[1]


class Linear(nn.Module):
    """A forecaster (batch, L, vars) -> (batch, 2, vars) that returns NaN from training call `nan_from` on."""

    def __init__(self, nan_from: int | None = None):
        super().__init__()
        self.proj, self.calls, self.nan_from = nn.Linear(4, 2), 0, nan_from

    def forward(self, x, covariates=None):
        self.calls += self.training
        y = self.proj(x.mT).mT
        return y * float("nan") if self.nan_from is not None and self.calls >= self.nan_from else y


def loader(n: int = 16, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = [{"x": torch.randn(4, 3, generator=g), "y": torch.randn(2, 3, generator=g)} for _ in range(n)]
    return DataLoader(data, batch_size=4)


class WorseningModule(ForecastingModule):
    """val/mse that grows every epoch, so only the first epoch is ever the best."""

    def on_validation_epoch_end(self):
        self.log("val/mse", float(self.current_epoch))


def fit(module, dirpath: Path, epochs: int, ckpt_path=None) -> tuple[L.Trainer, RunCheckpoint]:
    checkpoint = RunCheckpoint(dirpath=dirpath, filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                               monitor="val/mse", mode="min", save_last=True)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[checkpoint], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader(), val_dataloaders=loader(8, 1), ckpt_path=ckpt_path)
    return trainer, checkpoint


def optimizer(params):
    return torch.optim.SGD(params, lr=0.1)


def test_last_ckpt_is_the_last_epoch_and_resume_in_a_new_folder_keeps_the_best(tmp_path):
    _, first = fit(WorseningModule(Linear(), optimizer), tmp_path / "a", 3)
    last = torch.load(tmp_path / "a" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 2  # the last epoch, though only epoch 0 was a top-1 checkpoint
    assert Path(first.best_model_path).name == "epoch000.ckpt"
    assert not list((tmp_path / "a").glob("*.partial"))
    _, resumed = fit(WorseningModule(Linear(), optimizer), tmp_path / "b", 5, ckpt_path=tmp_path / "a" / "last.ckpt")
    assert resumed.best_model_path == first.best_model_path and resumed.best_model_score == 0
    assert torch.load(tmp_path / "b" / "last.ckpt", weights_only=False)["epoch"] == 4
    assert (tmp_path / "a" / "epoch000.ckpt").exists() and not list((tmp_path / "b").glob("epoch*.ckpt"))


def test_non_finite_loss_stops_before_the_update_naming_the_step(tmp_path):
    module = ForecastingModule(Linear(nan_from=4 * 2 + 3), optimizer)  # epoch 2, its third batch
    with pytest.raises(FloatingPointError, match=r"non-finite loss at training step 10 \(epoch 2, batch 2\)"):
        fit(module, tmp_path, 5)
    assert torch.isfinite(module.model.proj.weight).all()
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 1


def test_non_finite_input_is_named():
    module = ForecastingModule(Linear(), optimizer)
    batch = {"x": torch.randn(2, 4, 3), "y": torch.randn(2, 2, 3)}
    batch["x"][1, 2, 0] = float("inf")
    module.trainer = L.Trainer(logger=False)
    with pytest.raises(FloatingPointError, match=r"non-finite x, loss at training step 0 \(epoch 0, batch 7\)"):
        module.training_step(batch, 7)


def test_every_process_stops_when_one_sees_a_non_finite_value():
    """Under DDP the verdict is reduced over processes: a process whose own batch is finite stops too."""
    batch = {"x": torch.randn(2, 4, 3)}
    check_finite(torch.tensor(1.0), batch, 3, 0, 3, all_processes=lambda ok: ok)
    with pytest.raises(FloatingPointError, match=r"non-finite values in another process at training step 3"):
        check_finite(torch.tensor(1.0), batch, 3, 0, 3, all_processes=lambda ok: False)


@pytest.mark.parametrize(("override", "message"), [
    ("data.seq_len=abc", r"config key 'data.seq_len': expected int, got 'abc' \(str\)"),
    ("data.batch_size=2.5", r"config key 'data.batch_size': expected int, got 2.5 \(float\)"),
    ("trainer.max_epochs=many", r"config key 'trainer.max_epochs': expected int or null, got 'many'"),
    ("model.d_model=true", r"config key 'model.d_model': expected int, got True"),
    ("task.check_finite=maybe", r"config key 'task.check_finite': expected bool, got 'maybe'"),
])
def test_config_values_are_checked_by_type_and_named(override, message):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[override])
    with pytest.raises(ValueError, match=message):
        check_config(cfg)


def test_eval_batch_size_is_checked_by_name():
    with pytest.raises(ValueError, match=r"data.eval_batch_size: expected a positive int, got 0"):
        ForecastingDataModule(eval_batch_size=0)


def test_csv_dates_duplicated_are_rejected_and_unsorted_are_sorted_with_a_warning(tmp_path):
    path = tmp_path / "toy.csv"
    path.write_text("date,a,OT\n2020-01-01 00:00:00,1,2\n2020-01-01 01:00:00,3,4\n2020-01-01 00:00:00,5,6\n")
    with pytest.raises(ValueError, match=r"toy\.csv: rows 2 and 4 have the same date 2020-01-01 00:00:00"):
        read_csv(path, "OT")
    path.write_text("date,a,OT\n2020-01-01 01:00:00,3,4\n2020-01-01 00:00:00,1,2\n2020-01-01 02:00:00,5,6\n")
    with pytest.warns(UserWarning, match=r"toy\.csv: dates out of order \(row 3, 2020-01-01 00:00:00, comes after"):
        _, values, dates = read_csv(path, "OT")
    assert values[:, 0].tolist() == [1, 3, 5] and dates == sorted(dates)
    path.write_text("date,a,OT\n2020-01-01 00:00:00,1,2\n2020-01-01 01:00:00,3,4\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_csv(path, "OT")


@pytest.mark.parametrize("out_indices", [(0, 4), (-5,), 0, 5, ()])
def test_features_only_with_bad_out_indices_is_named(out_indices):
    with pytest.raises(ValueError, match=r"out_indices: expected stage indices in \[-4, 4\) or a count of last "
                                         r"stages 1..4 \(vim2_tiny here has 4 stages\)"):
        timm.create_model("vim2_tiny", features_only=True, out_indices=out_indices, dims=(8, 8, 8, 8),
                          depths=(1, 1, 1, 1))
