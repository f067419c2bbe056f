"""bench/forecasting.py: runs per seed, finished runs not run again, the mean +- std over seeds."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    """The module, with train.py replaced by a run whose test MSE is 0.1 * seed (+ 1 for H = 192) and whose
    runs are recorded; a run of seed 3 fails the first time."""
    spec = importlib.util.spec_from_file_location("forecasting", ROOT / "bench" / "forecasting.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.calls = []

    def run_one(experiment, seq_len, pred_len, seed, overrides, runs):
        command = "python train.py " + " ".join(module.arguments(experiment, seq_len, pred_len, seed, overrides))
        module.calls.append(command)
        row = {"experiment": experiment, "seq_len": seq_len, "pred_len": pred_len, "seed": seed, "command": command,
               "wall_time_s": 1.0}
        if seed == 3 and module.calls.count(command) == 1:
            return {**row, "returncode": 1, "error": "killed"}
        mse = 0.1 * seed + (pred_len == 192)
        return {**row, "returncode": 0, "test/mse": mse, "test/mae": mse / 2, "epochs": 3}

    monkeypatch.setattr(module, "run_one", run_one)
    return module


def _main(bench, monkeypatch, out):
    monkeypatch.setattr(sys, "argv", ["forecasting.py", "--out", str(out), "--experiments", "tsm2_etth1",
                                      "--horizons", "96,192", "--seeds", "1,2,3", "--jobs", "2", "--", "trainer=cpu"])
    bench.main()
    return json.loads((out / "forecasting.json").read_text())


def test_seeds_resume_and_summary(bench, monkeypatch, tmp_path, capsys):
    rows = _main(bench, monkeypatch, tmp_path)
    assert len(bench.calls) == 6 and sum(r["returncode"] != 0 for r in rows) == 2
    assert "python train.py experiment=tsm2_etth1 data.seq_len=512 data.pred_len=96 seed=2 trainer=cpu" in bench.calls
    rows = _main(bench, monkeypatch, tmp_path)  # only the two failed runs again
    assert len(bench.calls) == 8 and len(rows) == 6 and all(r["returncode"] == 0 for r in rows)
    summary = bench.summary(rows)
    assert [(r["pred_len"], r["runs"]) for r in summary] == [(96, 3), (192, 3)]
    assert summary[0]["test/mse"] == pytest.approx(0.2) and summary[0]["test/mse_std"] == pytest.approx(0.1)
    assert summary[1]["test/mae"] == pytest.approx(0.6) and summary[1]["test/mae_std"] == pytest.approx(0.05)
    assert "0.2000 +- 0.1000" in capsys.readouterr().out
