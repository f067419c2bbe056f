"""bench/forecasting.py: runs per seed, finished runs not run again, the mean +- std over seeds, stopped runs
resumed from their checkpoint."""

import json
import sys
import time

import pytest

from helpers import bench_module


@pytest.fixture
def bench(monkeypatch):
    """The module, with train.py replaced by a run whose test MSE is 0.1 * seed (+ 1 for H = 192) and whose
    runs are recorded; a run of seed 3 fails the first time."""
    module = bench_module("forecasting")
    module.calls = []

    def run_one(experiment, seq_len, pred_len, seed, overrides, runs, deadline):
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


# Stands in for train.py: without ckpt_path it writes a checkpoint and runs on (to be stopped); with one, it
# writes the metrics of a finished run, its test MSE saying which checkpoint it went on from.
FAKE_TRAIN = """
import json, sys, time
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:])
run_dir = Path(args["hydra.run.dir"])
(run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
if "ckpt_path" not in args:
    (run_dir / "checkpoints" / "last.ckpt").write_text("epoch 3")
    time.sleep(60)
mse = 0.5 if Path(args["ckpt_path"]).read_text() == "epoch 3" else 9.0
(run_dir / "metrics.json").write_text(json.dumps({"test/mse": mse, "test/mae": 0.4, "epochs": 4}))
"""


def test_a_run_stopped_at_the_deadline_goes_on_from_its_checkpoint(monkeypatch, tmp_path):
    bench = bench_module("forecasting")
    (tmp_path / "train.py").write_text(FAKE_TRAIN)
    monkeypatch.setattr(bench, "TRAIN", tmp_path / "train.py")
    job = ("tsm2_etth1", 512, 96, 1, ["trainer=cpu"], tmp_path / "runs")
    assert bench.run_one(*job, deadline=time.time() + 3) is None  # stopped: nothing recorded
    stopped = json.loads((tmp_path / "runs" / "tsm2_etth1_512_96_s1" / bench_module("train_run").STOPPED).read_text())
    assert stopped["run"].endswith("seed=1 trainer=cpu") and stopped["wall_time_s"] >= 3
    row = bench.run_one(*job)
    assert row["returncode"] == 0 and row["test/mse"] == 0.5 and row["wall_time_s"] >= 3
    assert row["command"] == stopped["run"]  # the row's command has no ckpt_path
    assert bench._run_before(time.time() - 1, *job) is None  # past the deadline nothing starts
