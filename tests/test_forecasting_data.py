"""Forecasting data: protocol splits, train-only scaling, batches, and every documented error."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mambamixer.tasks.forecasting.data import ForecastingDataModule, split_borders

ETTH1 = Path(__file__).resolve().parents[1] / "data" / "ett" / "ETTh1.csv"


def write_csv(path: Path, rows: int, columns=("a", "b", "OT"), start_hour=0) -> np.ndarray:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(rows, len(columns))) * [1, 5, 10] + [0, 3, -7]
    lines = ["date," + ",".join(columns)]
    for i, row in enumerate(values):
        day, hour = divmod(start_hour + i, 24)
        lines.append(f"2020-01-{1 + day % 28:02d} {hour:02d}:00:00," + ",".join(f"{v:.6f}" for v in row))
    path.write_text("\n".join(lines) + "\n")
    return np.array([[float(f"{v:.6f}") for v in row] for row in values])


def test_ett_hour_borders_by_hand():
    month = 30 * 24
    starts, ends = split_borders("ett_hour", 17420, 512)
    assert starts == [0, 12 * month - 512, 16 * month - 512]
    assert ends == [12 * month, 16 * month, 20 * month]
    starts, ends = split_borders("ett_minute", 69680, 96)
    assert ends == [12 * month * 4, 16 * month * 4, 20 * month * 4]


def test_custom_borders_by_hand():
    starts, ends = split_borders("custom", 100, 10)  # 70 train, 20 test, 10 val
    assert (starts, ends) == ([0, 60, 70], [70, 80, 100])


def test_etth1_windows_and_train_only_scaling():
    dm = ForecastingDataModule(seq_len=96, pred_len=96)
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [8449, 2785, 2785]  # the protocol's counts
    raw = np.loadtxt(ETTH1, delimiter=",", skiprows=1, usecols=range(1, 8))
    train = raw[:8640]
    np.testing.assert_allclose(dm.mean, train.mean(0))
    np.testing.assert_allclose(dm.std, train.std(0))
    first_test = dm.dataset("test")[0]
    expected = (raw[11520 - 96:11520] - train.mean(0)) / train.std(0)
    np.testing.assert_allclose(first_test["x"].numpy(), expected, rtol=1e-5, atol=1e-5)
    expected_y = (raw[11520:11520 + 96] - train.mean(0)) / train.std(0)
    np.testing.assert_allclose(first_test["y"].numpy(), expected_y, rtol=1e-5, atol=1e-5)
    assert first_test["covariates"].shape == (96, 4)  # hour, weekday, day of month, day of year
    assert dm.columns[-1] == "OT"


def test_custom_split_scaling_and_feature_modes(tmp_path):
    values = write_csv(tmp_path / "toy.csv", 100)
    for features, n_vars, n_targets in (("M", 3, 3), ("S", 1, 1), ("MS", 3, 1)):
        dm = ForecastingDataModule("toy.csv", str(tmp_path), "custom", features=features, seq_len=10, pred_len=5,
                                   time_features=False)
        cols = slice(None) if features != "S" else slice(2, 3)
        np.testing.assert_allclose(dm.mean, values[:70, cols].mean(0), rtol=1e-6)
        item = dm.dataset("val")[0]
        assert item["x"].shape == (10, n_vars) and item["y"].shape == (5, n_targets) and "covariates" not in item
        scaled = (values[60:70, cols] - values[:70, cols].mean(0)) / values[:70, cols].std(0)
        np.testing.assert_allclose(item["x"].numpy(), scaled, rtol=1e-4, atol=1e-5)
        assert dm.model_kwargs == {"n_vars": n_vars, "n_covariates": 0}


def test_target_column_is_moved_last(tmp_path):
    write_csv(tmp_path / "toy.csv", 60, columns=("OT", "a", "b"))
    dm = ForecastingDataModule("toy.csv", str(tmp_path), "custom", seq_len=8, pred_len=4)
    assert dm.columns == ["a", "b", "OT"]


def test_evaluation_keeps_the_last_partial_batch():
    dm = ForecastingDataModule(seq_len=96, pred_len=96, eval_batch_size=256)
    batches = list(dm.test_dataloader())
    assert len(batches) == math.ceil(2785 / 256)
    assert sum(len(b["y"]) for b in batches) == 2785


def test_train_order_depends_only_on_seed_and_epoch():
    dm = ForecastingDataModule(seq_len=96, pred_len=96, seed=3)
    sampler = dm.train_dataloader().sampler
    sampler.set_epoch(2)
    first = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) != first
    sampler.set_epoch(2)
    assert list(sampler) == first and sorted(first) == list(range(8449))


@pytest.mark.parametrize("make,message", [
    (lambda p: None, r"data: file not found: .*missing\.csv"),
    (lambda p: p.write_text("date,a,b\n2020-01-01 00:00:00,1,2\n"), r"target column 'OT' not found"),
    (lambda p: p.write_text("date,a,OT\n2020-01-01 00:00:00,1,2\n2020-01-01 01:00:00,x,3\n"),
     r"row 3: non-numeric value 'x'"),
    (lambda p: p.write_text("date,a,OT\n2020-01-01 00:00:00,1,2\n2020-01-01 01:00:00,,3\n"),
     r"row 3: non-numeric value ''"),
    (lambda p: p.write_text("date,a,OT\nyesterday,1,2\n"), r"row 2: cannot read the date 'yesterday'"),
    (lambda p: p.write_text("time,a,OT\n2020-01-01 00:00:00,1,2\n"), r"first column is 'date'"),
    (lambda p: write_csv(p, 30), r"too few rows for seq_len=20 \+ pred_len=5"),
])
def test_bad_files_fail_early_naming_the_file(tmp_path, make, message):
    path = tmp_path / ("missing.csv" if "missing" in message else "bad.csv")
    make(path)
    dm = ForecastingDataModule(path.name, str(tmp_path), "custom", seq_len=20, pred_len=5)
    with pytest.raises(ValueError, match=message):
        dm.setup("fit")


def test_ett_split_needs_enough_rows(tmp_path):
    write_csv(tmp_path / "short.csv", 500)
    dm = ForecastingDataModule("short.csv", str(tmp_path), "ett_hour", seq_len=24, pred_len=24)
    with pytest.raises(ValueError, match=r"short\.csv: the ett_hour split needs 14400 rows, the file has 500"):
        dm.setup("fit")


@pytest.mark.parametrize("kwargs,message", [
    (dict(split="hourly"), r"data.split: expected one of"),
    (dict(features="X"), r"data.features: expected one of"),
    (dict(pred_len=0), r"data.pred_len: expected a positive int"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ForecastingDataModule(**kwargs)


def test_batches_are_float32_dicts():
    dm = ForecastingDataModule(seq_len=96, pred_len=24, batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (8, 96, 7) and batch["y"].shape == (8, 24, 7) and batch["covariates"].shape == (8, 96, 4)
    assert all(v.dtype == torch.float32 for v in batch.values())
