"""train.py end to end: every experiment config, a multirun, resume, and config errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from mambamixer.train import compile_options
from mambamixer.utils.config_check import check_config
from mambamixer.utils.tuned import save_tuned

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml") if not p.stem.startswith("vim2"))
# Small and quick: the protocol's code paths on short windows and a few batches (conf/debug/tiny.yaml).
TINY = ["debug=tiny"]


def run(*overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-3000:] + result.stderr[-3000:])
    return result


def metrics_of(result: subprocess.CompletedProcess) -> tuple[dict, Path]:
    out_dir = Path(result.stdout.strip().splitlines()[-1])
    return json.loads((out_dir / "metrics.json").read_text()), out_dir


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_of_every_experiment(experiment, tmp_path):
    result = run(f"experiment={experiment}", "trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path}",
                 "data.eval_batch_size=64")
    metrics, out_dir = metrics_of(result)
    assert out_dir == tmp_path
    assert {"test/mse", "test/mae"} <= set(metrics) and metrics["test/mse"] > 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[dict, Path]:
    """One epoch of the tiny default run: its metrics and output folder."""
    return metrics_of(run(*TINY, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path_factory.mktemp('tiny')}"))


@pytest.mark.slow
def test_default_run_writes_metrics_plot_and_checkpoints(tiny_run):
    metrics, out_dir = tiny_run
    assert metrics["epochs"] == 1 and metrics["test/mse"] > 0
    assert (out_dir / "logs" / "forecast.png").stat().st_size > 10_000
    assert (out_dir / "checkpoints" / "last.ckpt").exists()
    assert (out_dir / "logs" / "metrics.csv").exists()


@pytest.mark.slow
def test_compile_gives_the_plain_runs_metrics(tiny_run, tmp_path):
    """compile= compiles the model in place; dynamo traces it with a dynamic batch size (training, then
    evaluation batches), and the eager backend keeps the test quick. Same data, seed and numbers."""
    plain, _ = tiny_run
    compiled, _ = metrics_of(run(*TINY, "trainer.max_epochs=1", "compile={backend:eager}",
                                 f"hydra.run.dir={tmp_path / 'compiled'}"))
    assert compiled["test/mse"] == plain["test/mse"] and compiled["test/mae"] == plain["test/mae"]
    assert compiled["first_train_step_s"] > 0 and compiled["train_step_s"] > 0
    assert "first_train_step_s" not in plain


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], None), (["trainer=gpu"], None), (["compile=auto"], None),  # auto with the CPU trainer: eager
    (["compile=auto", "trainer=gpu"], {}), (["experiment=vim2_tiny_imagenet", "trainer=ddp"], {}),
    (["experiment=vim2_tiny_imagenet"], None),
    (["experiment=vim2_tiny_imagenet", "trainer=gpu", "compile=false"], None),
    (["compile=true"], {}), (["compile={mode:max-autotune}"], {"mode": "max-autotune"}),
])
def test_compile_auto_compiles_on_gpus_only(overrides, expected):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert compile_options(cfg) == expected


def test_bad_compile_value_is_named():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["compile=sometimes"])
    with pytest.raises(ValueError, match="compile: expected auto, true, false"):
        compile_options(cfg)


@pytest.mark.slow
def test_multirun_over_two_horizons(tmp_path):
    result = run("-m", "experiment=tsm2_etth1", "data.pred_len=8,16", *TINY,
                 "trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path}")
    runs = sorted(p.parent for p in tmp_path.rglob("metrics.json"))
    assert len(runs) == 2, result.stdout[-2000:]
    horizons = {OmegaConf.load(r / ".hydra" / "config.yaml").data.pred_len for r in runs}
    assert horizons == {8, 16}
    assert all(json.loads((r / "metrics.json").read_text())["test/mse"] > 0 for r in runs)


@pytest.mark.slow
def test_optuna_search_minimises_the_best_validation_mse(tmp_path):
    """hparams_search=tsm2_optuna: trials sampled by TPE with a fixed seed, each returning the best validation
    MSE of its run; the best trial's overrides are printed and written to optimization_results.yaml."""
    result = run("-m", "hparams_search=tsm2_optuna", "experiment=tsm2_etth1", *TINY, "trainer.max_epochs=1",
                 "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=2", f"hydra.sweep.dir={tmp_path}")
    trials = [json.loads((tmp_path / str(i) / "metrics.json").read_text()) for i in range(3)]
    best = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(t["val/mse_best"] for t in trials))
    assert set(best.best_params) >= {"model.d_model", "model.patch_len", "task.optimizer.lr", "data.batch_size"}
    assert "Best parameters" in result.stdout + result.stderr
    # Saved as the experiment's tuned settings, a later run of it (same input length and horizon) takes them.
    tuned_dir = tmp_path / "tuned"
    save_tuned(tmp_path, tuned_dir)
    metrics, out_dir = metrics_of(run("experiment=tsm2_etth1", *TINY, "trainer.max_epochs=1",
                                      f"paths.tuned_dir={tuned_dir}", f"hydra.run.dir={tmp_path / 'tuned_run'}"))
    assert OmegaConf.load(out_dir / "tuned.yaml").settings == best.best_params
    best_trial = min(range(3), key=lambda i: trials[i]["val/mse_best"])
    assert metrics["parameters"] == trials[best_trial]["parameters"]


def test_search_config_optimises_a_validation_metric():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=tsm2_optuna", "experiment=tsm2_etth1"],
                      return_hydra_config=True)
    assert cfg.optimized_metric.startswith("val/")
    assert cfg.hydra.sweeper.direction == "minimize" and cfg.hydra.sweeper.sampler.seed == cfg.seed


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_into_a_new_folder_at_the_uninterrupted_metrics(tmp_path):
    """SIGINT while epoch 2 (of 4) trains, then `ckpt_path=.../last.ckpt` with a new run folder: the resumed run
    keeps the best score and RNG state, so it tests the checkpoint the uninterrupted run tests."""
    common = [*TINY, "trainer.max_epochs=4", "trainer.limit_train_batches=40", "callbacks.early_stopping=null",
              "model.dropout=0.3"]
    whole, _ = metrics_of(run(*common, f"hydra.run.dir={tmp_path / 'whole'}"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *common, f"hydra.run.dir={tmp_path / 'first'}"],
                             cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (last.exists() and torch.load(last, weights_only=False)["epoch"] >= 1):  # written whole, then renamed
        assert first.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=120) != 0 and not (tmp_path / "first" / "metrics.json").exists()
    resumed, _ = metrics_of(run(*common, f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}"))
    assert resumed["epochs"] == whole["epochs"] == 4
    for key in ("test/mse", "test/mae"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-6), key


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TINY, "trainer.fast_dev_run=true"], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=300) for r in runs]
    assert all(r.returncode == 0 for r in runs), [err[-2000:] for _, err in outputs]
    folders = {Path(out.strip().splitlines()[-1]) for out, _ in outputs}
    assert len(folders) == 2 and all((f / "metrics.json").exists() for f in folders)
    assert len({f.name[:19] for f in folders}) <= 2  # named by the second they started, and a random suffix


@pytest.mark.slow
def test_a_run_that_trains_nothing_fails(tmp_path):
    result = run(*TINY, "trainer.max_epochs=0", f"hydra.run.dir={tmp_path / 'zero'}", check=False)
    assert result.returncode != 0 and "trainer.max_epochs=0 (or max_steps=0) trains nothing" in result.stderr
    assert not (tmp_path / "zero" / "metrics.json").exists()
    result = run("experiment=vim2_digits", "data.batch_size=2048", "trainer.max_epochs=1", "data.num_workers=0",
                 f"hydra.run.dir={tmp_path / 'empty'}", check=False)
    assert result.returncode != 0 and "training ran no optimizer step" in result.stderr, result.stderr[-2000:]
    assert "data.batch_size=2048" in result.stderr and not (tmp_path / "empty" / "metrics.json").exists()


@pytest.mark.slow
def test_max_epochs_zero_with_a_checkpoint_only_evaluates_it(tmp_path):
    trained, _ = metrics_of(run(*TINY, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'trained'}"))
    last = tmp_path / "trained" / "checkpoints" / "last.ckpt"
    result = run(*TINY, "trainer.max_epochs=0", f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert f"no training; evaluating the checkpoint {last}" in result.stdout
    evaluated, _ = metrics_of(result)
    assert evaluated["test/mse"] == pytest.approx(trained["test/mse"], rel=1e-6)


@pytest.mark.slow
def test_mistyped_override_fails_before_any_data_is_read(tmp_path):
    result = run("data.pred_lenn=96", "data.root=/nonexistent", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode != 0
    assert "pred_lenn" in result.stderr and "not found" not in result.stderr


def test_mistyped_key_in_a_config_file_is_named():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=tsm2_etth1"])
    check_config(cfg)
    with open_dict(cfg):
        cfg.data.pred_lenn = 96
    with pytest.raises(ValueError, match=r"config key 'data.pred_lenn' is not an argument of .*ForecastingDataModule; "
                                         r"did you mean 'pred_len'\?"):
        check_config(cfg)
    with open_dict(cfg):
        del cfg.data.pred_lenn
        cfg.trainer.max_epoch = 3
    with pytest.raises(ValueError, match=r"'trainer.max_epoch' .* did you mean 'max_epochs'"):
        check_config(cfg)


@pytest.mark.slow
def test_appended_unknown_key_is_rejected_before_any_data_is_read(tmp_path):
    result = run("+model.d_modle=8", "data.root=/nonexistent", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode != 0
    assert "config key 'model.d_modle'" in result.stderr and "not found" not in result.stderr


def test_every_config_group_option_composes():
    for group in ("data", "model", "trainer", "logger", "callbacks"):
        for option in (ROOT / "conf" / group).glob("*.yaml"):
            with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
                cfg = compose("train", overrides=[f"{group}={option.stem}"])
            check_config(cfg)
            assert OmegaConf.select(cfg, group) is not None
