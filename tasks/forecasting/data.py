"""Forecasting data: CSV files in the Time-Series-Library layout (`date` first, target last).

Splits follow the Informer / Time-Series-Library protocol: ETT hourly files 12 / 4 / 4 months for
train / val / test ("ett_hour"), the 15-minute files the same in 15-minute steps ("ett_minute"), other
files 70 / 10 / 20 % ("custom"); val and test windows start `seq_len` steps before their split so their
first target is the split's first step. Values are standard-scaled with statistics of the training part
only; metrics are computed on the scaled values, as the protocol does.
"""

from __future__ import annotations

import csv
import warnings
from datetime import datetime
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "ett"
SPLITS = ("ett_hour", "ett_minute", "custom")
FEATURES = ("M", "S", "MS")
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d")


def split_borders(split: str, n_rows: int, seq_len: int) -> tuple[list[int], list[int]]:
    """Row ranges [start, end) of train, val and test; val/test start seq_len rows early (their history)."""
    if split in ("ett_hour", "ett_minute"):
        month = 30 * 24 * (4 if split == "ett_minute" else 1)
        ends = [12 * month, 16 * month, 20 * month]
        return [0, ends[0] - seq_len, ends[1] - seq_len], ends
    n_train, n_test = int(n_rows * 0.7), int(n_rows * 0.2)
    n_val = n_rows - n_train - n_test
    return [0, n_train - seq_len, n_rows - n_test - seq_len], [n_train, n_train + n_val, n_rows]


def _parse_date(text: str, path: Path, row: int) -> datetime:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    raise ValueError(f"{path}: row {row}: cannot read the date {text!r}")


def read_csv(path: Path, target: str) -> tuple[list[str], np.ndarray, list[datetime]]:
    """Columns (without `date`), values (rows, columns) float32 and dates; the target column moved last.

    Rows are in date order: a file with two rows of one date is rejected; one out of order is sorted, with a
    warning that says so."""
    if not path.is_file():
        raise ValueError(f"data: file not found: {path}")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or not rows[0] or rows[0][0] != "date":
        raise ValueError(f"{path}: expected a header whose first column is 'date', got {rows[0][:3] if rows else []}")
    header = rows[0][1:]
    if target not in header:
        raise ValueError(f"{path}: target column {target!r} not found; columns are {header}")
    body = rows[1:]
    values = np.empty((len(body), len(header)), dtype=np.float64)
    for i, row in enumerate(body):
        if len(row) != len(header) + 1:
            raise ValueError(f"{path}: row {i + 2} has {len(row)} fields, expected {len(header) + 1}")
        try:
            values[i] = [float(v) for v in row[1:]]
        except ValueError:
            bad = next(v for v in row[1:] if not _is_number(v))
            raise ValueError(f"{path}: row {i + 2}: non-numeric value {bad!r}") from None
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values))[0, 0])
        raise ValueError(f"{path}: row {row + 2}: missing or infinite value")
    order = [c for c in header if c != target] + [target]
    values = values[:, [header.index(c) for c in order]]
    dates = [_parse_date(row[0], path, i + 2) for i, row in enumerate(body)]
    seen = {}
    for i, date in enumerate(dates):
        if date in seen:
            raise ValueError(f"{path}: rows {seen[date] + 2} and {i + 2} have the same date {date}")
        seen[date] = i
    late = next((i for i in range(1, len(dates)) if dates[i] < dates[i - 1]), None)
    if late is not None:
        warnings.warn(f"{path}: dates out of order (row {late + 2}, {dates[late]}, comes after {dates[late - 1]}); "
                      "the rows are sorted by date", stacklevel=2)
        rows_by_date = sorted(range(len(dates)), key=dates.__getitem__)
        values, dates = values[rows_by_date], [dates[i] for i in rows_by_date]
    return order, values, dates


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def time_features(dates: list[datetime]) -> np.ndarray:
    """Calendar covariates in [-0.5, 0.5] (minute, hour, weekday, day of month, day of year), keeping only
    those that vary in the file: (rows, K) float32."""
    columns = [
        [d.minute / 59 for d in dates],
        [d.hour / 23 for d in dates],
        [d.weekday() / 6 for d in dates],
        [(d.day - 1) / 30 for d in dates],
        [(d.timetuple().tm_yday - 1) / 365 for d in dates],
    ]
    kept = [np.asarray(c) - 0.5 for c in columns if max(c) > min(c)]
    return np.stack(kept, axis=1).astype(np.float32) if kept else np.zeros((len(dates), 0), np.float32)


class WindowDataset(Dataset):
    """Every window of one split at stride 1: x (seq_len, n_vars), y (pred_len, n_targets), covariates."""

    def __init__(self, values: torch.Tensor, covariates: torch.Tensor | None, seq_len: int, pred_len: int,
                 n_targets: int):
        self.values, self.covariates = values, covariates
        self.seq_len, self.pred_len, self.n_targets = seq_len, pred_len, n_targets

    def __len__(self) -> int:
        return len(self.values) - self.seq_len - self.pred_len + 1

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        end = i + self.seq_len
        item = {"x": self.values[i:end], "y": self.values[end:end + self.pred_len, -self.n_targets:]}
        if self.covariates is not None:
            item["covariates"] = self.covariates[i:end]
        return item


class EpochShuffleSampler(Sampler[int]):
    """A permutation drawn from (seed, epoch): the same order on every run, so a resumed run sees exactly
    the batches the uninterrupted run would. Lightning calls `set_epoch` at each epoch start."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


class ForecastingDataModule(L.LightningDataModule):
    """Windows of a forecasting CSV for Lightning.

    root: folder of `file` (None: the bundled ETTh1); split: "ett_hour" | "ett_minute" | "custom";
    features: "M" (all columns in and out), "S" (target only), "MS" (all in, target out); time_features:
    give the model calendar covariates. Batches are dicts: x (batch, seq_len, n_vars), y (batch, pred_len,
    n_targets), covariates (batch, seq_len, n_covariates) when used. Evaluation keeps the last partial batch.
    """

    def __init__(self, file: str = "ETTh1.csv", root: str | None = None, split: str = "ett_hour", target: str = "OT",
                 features: str = "M", seq_len: int = 512, pred_len: int = 96, time_features: bool = True,
                 batch_size: int = 32, eval_batch_size: int = 256, num_workers: int = 0, seed: int = 0):
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"data.split: expected one of {SPLITS}, got {split!r}")
        if features not in FEATURES:
            raise ValueError(f"data.features: expected one of {FEATURES}, got {features!r}")
        for name, value in (("seq_len", seq_len), ("pred_len", pred_len), ("batch_size", batch_size),
                            ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ValueError(f"data.{name}: expected a positive int, got {value}")
        self.path = (Path(root).expanduser() if root is not None else BUNDLED) / file
        self.split, self.target, self.features = split, target, features
        self.seq_len, self.pred_len, self.use_time_features = seq_len, pred_len, time_features
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self._datasets: dict[str, WindowDataset] | None = None

    # -- loading ------------------------------------------------------------------------------------------
    def _load(self) -> dict[str, WindowDataset]:
        if self._datasets is not None:
            return self._datasets
        columns, values, dates = read_csv(self.path, self.target)
        if self.features == "S":
            columns, values = columns[-1:], values[:, -1:]
        starts, ends = split_borders(self.split, len(values), self.seq_len)
        if self.split != "custom" and len(values) < ends[2]:
            raise ValueError(f"{self.path}: the {self.split} split needs {ends[2]} rows, the file has {len(values)}")
        for name, start, end in zip(("train", "val", "test"), starts, ends):
            if start < 0 or end - start < self.seq_len + self.pred_len:
                raise ValueError(f"{self.path}: too few rows for seq_len={self.seq_len} + pred_len={self.pred_len}: "
                                 f"the {name} split has {max(end - max(start, 0), 0)} rows")
        train = values[starts[0]:ends[0]]
        mean, std = train.mean(0), train.std(0)
        std[std == 0] = 1.0
        scaled = torch.from_numpy(((values - mean) / std).astype(np.float32))
        calendar = torch.from_numpy(time_features(dates)) if self.use_time_features else None
        self._columns, self._mean, self._std = columns, mean, std
        n_targets = 1 if self.features == "MS" else len(columns)
        self._datasets = {
            name: WindowDataset(scaled[s:e], None if calendar is None else calendar[s:e], self.seq_len,
                                self.pred_len, n_targets)
            for name, s, e in zip(("train", "val", "test"), starts, ends)
        }
        return self._datasets

    @property
    def columns(self) -> list[str]:
        """Variate names, target last."""
        self._load()
        return self._columns

    @property
    def mean(self) -> np.ndarray:
        """Per-column mean of the training split, used for scaling."""
        self._load()
        return self._mean

    @property
    def std(self) -> np.ndarray:
        """Per-column standard deviation of the training split (1 where a column is constant)."""
        self._load()
        return self._std

    @property
    def n_vars(self) -> int:
        """Input variates."""
        return len(self.columns)

    @property
    def n_covariates(self) -> int:
        covariates = self._load()["train"].covariates
        return 0 if covariates is None else covariates.shape[1]

    @property
    def model_kwargs(self) -> dict[str, int]:
        """What a model must know of the data, passed by train.py when it builds the model."""
        return {"n_vars": self.n_vars, "n_covariates": self.n_covariates}

    def dataset(self, name: str) -> WindowDataset:
        return self._load()[name]

    # -- Lightning ----------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self._load()

    def train_dataloader(self) -> DataLoader:
        data = self.dataset("train")
        return DataLoader(data, batch_size=self.batch_size, sampler=EpochShuffleSampler(len(data), self.seed),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def _eval_loader(self, name: str) -> DataLoader:
        return DataLoader(self.dataset(name), batch_size=self.eval_batch_size, shuffle=False, drop_last=False,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
