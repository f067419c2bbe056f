"""Tuned settings (utils/tuned.py): a search's best overrides saved per (experiment, data, input length,
horizon) and applied under the command line."""

import json
import threading
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mambamixer.utils.tuned import apply_tuned, save_tuned, tuned_path

from helpers import bench_module

ROOT = Path(__file__).resolve().parents[1]


def composed(*overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def write_tuned(tuned_dir: Path, cfg, settings: dict) -> Path:
    path = tuned_path(tuned_dir, cfg)
    path.parent.mkdir(parents=True)
    path.write_text(OmegaConf.to_yaml(settings))
    return path


def test_tuned_settings_apply_under_the_command_line(tmp_path):
    command_line = ["experiment=tsm2_etth1", "data.pred_len=720", "model.d_model=8"]
    cfg = composed(*command_line)
    path = write_tuned(tmp_path, cfg, {"model.d_model": 32, "task.optimizer.lr": 1e-4, "model.revin_stats": "window"})
    assert path == tmp_path / "tsm2_etth1" / "ETTh1_L512_H720.yaml"
    tuned = apply_tuned(cfg, command_line, tmp_path)
    assert tuned == {"file": str(path), "settings": {"task.optimizer.lr": 1e-4, "model.revin_stats": "window"}}
    assert cfg.model.d_model == 8 and cfg.task.optimizer.lr == 1e-4 and cfg.model.revin_stats == "window"


@pytest.mark.parametrize("other", [["data.pred_len=96"], ["data.seq_len=96"], ["data=etth2"], ["use_tuned=false"]])
def test_tuned_settings_belong_to_one_data_input_length_and_horizon(tmp_path, other):
    write_tuned(tmp_path, composed("experiment=tsm2_etth1", "data.pred_len=720"), {"model.d_model": 32})
    command_line = ["experiment=tsm2_etth1", "data.pred_len=720", *other]
    cfg = composed(*command_line)
    assert apply_tuned(cfg, command_line, tmp_path) is None
    assert cfg.model.d_model == composed("experiment=tsm2_etth1").model.d_model


@pytest.mark.parametrize("experiment", ["tsm2_etth1", "tsm2_etth2", "tsm2_exchange", "tsm2_illness"])
def test_tsm2_experiments_use_tuned_settings_and_the_default_run_and_searches_do_not(experiment):
    assert composed(f"experiment={experiment}").use_tuned is True
    assert composed(f"experiment={experiment}", "hparams_search=tsm2_optuna").use_tuned is False
    assert composed().use_tuned is False


def test_a_tuned_key_missing_from_the_config_is_named(tmp_path):
    cfg = composed("experiment=tsm2_etth1")
    path = write_tuned(tmp_path, cfg, {"model.d_modle": 32})
    with pytest.raises(ValueError, match=f"{path}: key 'model.d_modle' is not in the config of experiment tsm2_etth1"):
        apply_tuned(cfg, [], tmp_path)


def test_save_writes_the_searchs_best_as_the_tuned_file(tmp_path):
    sweep = tmp_path / "sweep"
    cfg = composed("experiment=tsm2_etth2", "data.pred_len=192", "hparams_search=tsm2_optuna", "trainer=gpu")
    for trial, d_model in (("0", 16), ("1", 64)):  # the search's command line, then the trial's choices
        overrides = ["hparams_search=tsm2_optuna", "experiment=tsm2_etth2", "data.pred_len=192", "trainer=gpu",
                     "model.revin_stats=window", "hydra.sweeper.n_trials=2", f"model.d_model={d_model}",
                     "task.optimizer.lr=3e-4", "data.batch_size=16"]
        (sweep / trial / ".hydra").mkdir(parents=True)
        (sweep / trial / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=False))
        (sweep / trial / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    best = {"model.d_model": 64, "task.optimizer.lr": 3e-4, "data.batch_size": 16}
    (sweep / "optimization_results.yaml").write_text(OmegaConf.to_yaml({"name": "optuna", "best_params": best,
                                                                          "best_value": 0.2391}))
    path = save_tuned(sweep, tmp_path / "tuned")
    assert path == tmp_path / "tuned" / "tsm2_etth2" / "ETTh2_L512_H192.yaml"
    assert "best of 2 trials of val/mse_best = 0.2391" in path.read_text()
    command_line = ["experiment=tsm2_etth2", "data.pred_len=192"]
    run_cfg = composed(*command_line)
    assert run_cfg.trainer.max_epochs == 6  # trainer=cpu's; the search's trials ran under trainer=gpu's 30
    settings = apply_tuned(run_cfg, command_line, tmp_path / "tuned")["settings"]
    assert settings == {"model.revin_stats": "window", "trainer.max_epochs": 30, **best}
    assert (run_cfg.model.d_model, run_cfg.data.batch_size, run_cfg.model.revin_stats) == (64, 16, "window")
    assert run_cfg.task.scheduler.T_max == 30  # the cosine schedule the trials trained on


def test_save_names_a_folder_that_is_not_a_finished_search(tmp_path):
    with pytest.raises(FileNotFoundError, match="optimization_results.yaml: not found"):
        save_tuned(tmp_path)


def test_a_search_resumed_across_calls_asks_what_one_call_would(tmp_path, monkeypatch):
    """bench/tsm2_search.py: trials stopped at a call's end are forgotten, the next call restores the finished
    ones and the sampler, and the whole search equals an uninterrupted one; the finished search writes the
    sweeper's optimization_results.yaml."""
    search = bench_module("tsm2_search")
    config = search.search_config(seed=2024)
    config["n_trials"] = 12  # past the sampler's 8 random startup trials, into TPE

    def fake_trial(stop_at):
        def run(experiment, pred_len, params, overrides, run_dir, deadline, resume=None):
            if stop_at is not None and run_dir.name == str(stop_at):
                return "STOPPED", {}
            if params["model.depth"] == 1:
                return "FAIL", {"error": "out of memory"}
            value = params["task.optimizer.lr"] * 100 + params["model.dropout"] + params["model.d_model"] / 128
            return "COMPLETE", {"val/mse_best": value, "test/mse": value}
        return run

    def trials(out):
        return json.loads((out / "tsm2_etth1_L512_H96" / "trials.json").read_text())

    monkeypatch.setattr(search, "run_trial", fake_trial(None))
    whole = search.search("tsm2_etth1", 96, 512, config, [], tmp_path / "a", float("inf"), threading.Lock())
    for stop_at in (3, 9, None):  # three calls, the first two cut off
        monkeypatch.setattr(search, "run_trial", fake_trial(stop_at))
        parts = search.search("tsm2_etth1", 96, 512, config, [], tmp_path / "b", float("inf"), threading.Lock())
        assert len(trials(tmp_path / "b")) == (stop_at or 12)
    strip = [[{k: t[k] for k in ("number", "params", "state", "value")} for t in trials(tmp_path / out)]
             for out in ("a", "b")]
    assert strip[0] == strip[1] and len({str(t["params"]) for t in strip[0]}) == 12
    assert {t["state"] for t in strip[0]} == {"COMPLETE", "FAIL"}
    assert parts["best"] == whole["best"] and parts["trials"] == 12 and parts["failed"] == whole["failed"] > 0
    state = tmp_path / "b" / "tsm2_etth1_L512_H96"
    assert sorted(p.name for p in state.iterdir()) == ["optimization_results.yaml", "sampler.json", "trials.json"]
    results = OmegaConf.load(state / "optimization_results.yaml")
    assert results.best_value == whole["best"]["value"] and results.best_params == whole["best"]["params"]


def test_a_finished_study_saves_its_best_as_the_tuned_file(tmp_path, monkeypatch):
    """bench/tsm2_search.py: a study folder (its setting written beside its trials) is what
    `mambamixer.utils.tuned` saves from, as from a Hydra multirun folder: the run's file, the trial count."""
    search = bench_module("tsm2_search")
    config = search.search_config(seed=2024)
    config["n_trials"] = 3
    monkeypatch.setattr(search, "run_trial", lambda experiment, pred_len, params, *args, **kwargs: (
        "COMPLETE", {"val/mse_best": params["task.optimizer.lr"]}))
    study = tmp_path / "out" / "tsm2_etth2_L96_H336"
    search.write_setting(study, "tsm2_etth2", 336, 96, ["trainer=gpu", "model.revin_stats=window",
                                                        "+trainer.enable_progress_bar=false"])
    row = search.search("tsm2_etth2", 336, 96, config, [], tmp_path / "out", float("inf"), threading.Lock())
    path = save_tuned(study, tmp_path / "tuned")
    assert path == tmp_path / "tuned" / "tsm2_etth2" / "ETTh2_L96_H336.yaml"
    assert f"best of 3 trials of val/mse_best = {row['best']['value']:.6g}" in path.read_text()
    command_line = ["experiment=tsm2_etth2", "data.seq_len=96", "data.pred_len=336"]
    tuned = apply_tuned(composed(*command_line), command_line, tmp_path / "tuned")
    assert tuned["settings"] == {"model.revin_stats": "window", "trainer.max_epochs": 30, **row["best"]["params"]}


def test_a_trial_out_of_gpu_memory_is_run_again_not_counted_as_failed(tmp_path, monkeypatch):
    """bench/tsm2_search.py: a trial that runs out of GPU memory (another study's trial held it) is retried in
    the call; one recorded as failed that way is run again first by the next call, under its number. Either
    way the search ends as one without memory trouble."""
    search = bench_module("tsm2_search")
    monkeypatch.setattr(search, "OOM_WAIT_S", 0.0)
    config = search.search_config(seed=2024)
    config["n_trials"] = 10
    runs = []

    def fake_trial(oom_at):
        def run(experiment, pred_len, params, overrides, run_dir, deadline, resume=None):
            runs.append(run_dir.name)
            if run_dir.name in oom_at and runs.count(run_dir.name) <= oom_at[run_dir.name]:
                return "OOM", {"error": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB."}
            value = params["task.optimizer.lr"] * 100 + params["model.dropout"] + params["model.d_model"] / 128
            return "COMPLETE", {"val/mse_best": value}
        return run

    def trials(out):
        return json.loads((out / "tsm2_etth1_L512_H96" / "trials.json").read_text())

    def search_in(out, oom_at, n_trials=10):
        config["n_trials"] = n_trials
        monkeypatch.setattr(search, "run_trial", fake_trial(oom_at))
        return search.search("tsm2_etth1", 96, 512, config, [], tmp_path / out, float("inf"), threading.Lock())

    whole = search_in("clean", {})
    retried = search_in("retried", {"4": 2})  # out of memory twice, then fits: retried within the call
    assert runs.count("4") == 1 + 2 and retried["best"] == whole["best"] and retried["failed"] == 0
    runs.clear()
    search_in("later", {"2": 99}, n_trials=6)  # never fits in this call: recorded failed, out of memory
    first = trials(tmp_path / "later")
    assert runs.count("2") == 1 + search.OOM_RETRIES and first[2]["state"] == "FAIL"
    assert search._out_of_memory(first[2]) and not (tmp_path / "later" / "tsm2_etth1_L512_H96" /
                                                         "optimization_results.yaml").exists()
    runs.clear()
    later = search_in("later", {})
    assert runs[0] == "2" and trials(tmp_path / "later")[2]["attempts"] == 2
    assert later["failed"] == 0 and later["trials"] == 10
    strip = [[{k: t[k] for k in ("number", "params", "state")} for t in trials(tmp_path / out)]
             for out in ("clean", "retried", "later")]
    assert strip[0] == strip[1] and [t["params"] for t in strip[2][:6]] == [t["params"] for t in strip[0][:6]]


def test_a_trial_stopped_at_the_deadline_goes_on_from_its_checkpoint_in_the_next_call(tmp_path, monkeypatch):
    """bench/tsm2_search.py: with a kept --work, the next call asks the stopped trial's parameters again and
    resumes its run from its last checkpoint, counting both calls' wall time; a run that fails to resume runs
    again from the start; in a temporary folder a stopped run starts over."""
    search = bench_module("tsm2_search")
    config = search.search_config(seed=2024)
    config["n_trials"] = 3
    calls = []

    def fake_trial(stop_at, fail_resume=False):
        def run(experiment, pred_len, params, overrides, run_dir, deadline, resume=None):
            calls.append((run_dir.name, resume))
            if resume is not None and fail_resume:
                return "FAIL", {"error": "a checkpoint cut off mid-write"}
            if run_dir.name == str(stop_at) and resume is None:
                (run_dir / "checkpoints").mkdir(parents=True)
                (run_dir / "checkpoints" / "last.ckpt").write_text("epoch 2")
                return "STOPPED", {}
            return "COMPLETE", {"val/mse_best": params["task.optimizer.lr"]}
        return run

    def search_in(out, stop_at, work, **kwargs):
        monkeypatch.setattr(search, "run_trial", fake_trial(stop_at, **kwargs))
        return search.search("tsm2_etth1", 96, 512, config, [], tmp_path / out, float("inf"), threading.Lock(),
                             work)

    work = tmp_path / "work"
    search_in("kept", 1, work)
    run_dir = work / "tsm2_etth1_L512_H96" / "1"
    assert calls == [("0", None), ("1", None)] and (run_dir / bench_module("train_run").STOPPED).exists()
    calls.clear()
    row = search_in("kept", None, work)
    assert calls == [("1", run_dir / "checkpoints" / "last.ckpt"), ("2", None)] and not run_dir.exists()
    assert row["trials"] == 3 and row["failed"] == 0

    calls.clear()
    search_in("again", 1, work)
    calls.clear()
    search_in("again", None, work, fail_resume=True)  # resuming fails: the trial runs from the start
    assert calls[:2] == [("1", work / "tsm2_etth1_L512_H96" / "1" / "checkpoints" / "last.ckpt"), ("1", None)]

    calls.clear()
    search_in("temporary", 1, None)
    calls.clear()
    search_in("temporary", None, None)
    assert calls[0] == ("1", None)
