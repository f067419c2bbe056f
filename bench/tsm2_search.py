"""`hparams_search=tsm2_optuna` for many experiments and horizons at once, resumable across calls.

    python bench/tsm2_search.py --out DIR --experiments tsm2_etth1,tsm2_etth2,tsm2_exchange \
        --horizons 96,192,336,720 [--seq-len 512] [--start-until S] [--stop-after S] -- trainer=gpu [more overrides]

One Optuna study per (experiment, horizon), all running at once, each one trial at a time as
hydra-optuna-sweeper runs it with n_jobs 1: the search space, trial budget (n_trials), sampler and
objective (`optimized_metric`, the best validation MSE) are read from conf/hparams_search/tsm2_optuna.yaml.
A trial is `python train.py experiment=E data.pred_len=H use_tuned=false <its parameters> <overrides>` in
its own process and a folder under --work (a temporary folder by default), deleted once its metrics are read.

A study's state is two small JSON files, written as each trial ends: DIR/<study>/trials.json (the finished
trials: parameters, state, objective, metrics, wall time) and DIR/<study>/sampler.json (the seeded sampler's
random state). A call finds them, gives the earlier trials to the study and the sampler its state before
asking for more, so a search longer than one call runs in several, on any machine, and asks what one call
would have; bench/results/tsm2_search/ keeps the searches of BENCHMARKS.md that way.

A trial that runs out of GPU memory (the studies' trials share one GPU) is not a result: it is run again,
OOM_RETRIES times after OOM_WAIT_S each in one call, and one recorded as failed that way is run again first
by the next call (OOM_ATTEMPTS runs in all at most). Trials still running after --stop-after seconds are
stopped; none starts after --start-until seconds (by default --stop-after), so that those started earlier
can finish. A stopped trial is not recorded: the next call asks for the same parameters again, and with the
same --work on the same machine its run goes on from its last checkpoint (as `train.py ckpt_path=...`
resumes a run) instead of starting over. Each call also writes each study's setting as a trial's .hydra
folder would hold it: DIR/<study>/config.yaml (the composed config) and overrides.yaml (the command line). A
study with all its trials writes DIR/<study>/optimization_results.yaml as the sweeper does (with its trial
count), so `python -m mambamixer.utils.tuned DIR/<study>` saves its best settings to conf/tuned/.
Prints a table of the studies it ran; `--report` prints the table of every study in DIR.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import optuna
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import OmegaConf
from train_run import mark_stopped, run_train, stopped_run

ROOT = Path(__file__).resolve().parents[1]
OOM_RETRIES, OOM_WAIT_S, OOM_ATTEMPTS = 3, 30.0, 8
OOM_ERRORS = ("CUDA out of memory", "CUDA error: out of memory")  # an allocation; creating the CUDA context
SEARCH = ROOT / "conf" / "hparams_search" / "tsm2_optuna.yaml"
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # add_trial, create_trial


def search_config(seed: int) -> dict:
    """The search config's space (name -> Optuna distribution), n_trials, sampler and objective."""
    cfg = OmegaConf.load(SEARCH)
    sweeper = cfg.hydra.sweeper
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    space = {o.get_key_element(): create_optuna_distribution_from_override(o) for o in overrides}
    sampler = OmegaConf.to_container(sweeper.sampler)
    sampler["seed"] = seed  # the config's ${seed}
    return {"space": space, "n_trials": int(sweeper.n_trials), "sampler": sampler, "metric": cfg.optimized_metric,
            "direction": sweeper.direction}


def write_setting(folder: Path, experiment: str, pred_len: int, seq_len: int, overrides: list[str]) -> None:
    """folder/config.yaml and folder/overrides.yaml: a study's composed config and command line, what a
    Hydra trial's .hydra folder holds and `mambamixer.utils.tuned` reads (experiment, data file, lengths,
    objective, the search's fixed overrides). Composes with Hydra's global state: not from several threads."""
    command = ["hparams_search=tsm2_optuna", f"experiment={experiment}", f"data.pred_len={pred_len}",
               f"data.seq_len={seq_len}", "use_tuned=false", *overrides]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=command)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=False))
    (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(command))


def load_trials(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def _sampler_rngs(sampler: optuna.samplers.TPESampler) -> dict:
    """The TPE sampler's random generators: its own and its random startup sampler's (optuna 2.10, which
    hydra-optuna-sweeper requires); nothing else of it changes between asks."""
    return {"tpe": sampler._rng, "startup": sampler._random_sampler._rng}


def sampler_state(sampler: optuna.samplers.TPESampler) -> dict:
    """The sampler's random state as JSON."""
    state = {}
    for name, rng in _sampler_rngs(sampler).items():
        kind, keys, pos, has_gauss, cached = rng.get_state()
        state[name] = [kind, keys.tolist(), pos, has_gauss, cached]
    return state


def set_sampler_state(sampler: optuna.samplers.TPESampler, state: dict) -> None:
    """Give the sampler the random state that `sampler_state` wrote."""
    for name, rng in _sampler_rngs(sampler).items():
        kind, keys, pos, has_gauss, cached = state[name]
        rng.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def restore(study: optuna.Study, trials: list[dict], space: dict) -> None:
    """Add an earlier call's finished trials to the study, in their order."""
    for t in trials:
        state = optuna.trial.TrialState[t["state"]]
        value = t["value"] if state == optuna.trial.TrialState.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(params=t["params"], distributions=space, value=value, state=state))


def run_trial(experiment: str, pred_len: int, params: dict, overrides: list[str], run_dir: Path,
              deadline: float, resume: Path | None = None) -> tuple[str, dict]:
    """One training run, or the rest of one from its checkpoint `resume`; ("COMPLETE", metrics), ("FAIL",
    {"error": ...}), ("OOM", {"error": ...}) when it ran out of GPU memory, or ("STOPPED", {}) at the deadline."""
    args = [f"experiment={experiment}", f"data.pred_len={pred_len}", "use_tuned=false",
            *[f"{k}={v}" for k, v in params.items()], *overrides, f"hydra.run.dir={run_dir}"]
    if resume is not None:
        args.append(f"ckpt_path={resume}")
    returncode, output = run_train(args, deadline)
    if returncode is None:
        return "STOPPED", {}
    if returncode != 0:
        return "OOM" if any(e in output for e in OOM_ERRORS) else "FAIL", {"error": output[-2000:]}
    return "COMPLETE", json.loads((run_dir / "metrics.json").read_text())


def run_until_it_fits(experiment: str, pred_len: int, params: dict, overrides: list[str], run_dir: Path,
                      deadline: float) -> tuple[str, dict, float]:
    """`run_trial`, run again after OOM_WAIT_S while it runs out of GPU memory (OOM_RETRIES times at most);
    still out of memory: ("FAIL", {"error": ...}). Returns its state, metrics and wall time in seconds.

    A run of the same parameters stopped at an earlier call's deadline in run_dir (the same --work on the same
    machine) goes on from its last checkpoint; if that fails, the trial runs again from the start. A run
    stopped at this call's deadline keeps its folder for the next call; otherwise the folder is deleted."""
    resume, earlier_s = stopped_run(run_dir, params)
    start = time.time()
    for attempt in range(OOM_RETRIES + 1):
        if attempt:
            time.sleep(OOM_WAIT_S)
        if resume is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        state, metrics = run_trial(experiment, pred_len, params, overrides, run_dir, deadline, resume)
        if state == "FAIL" and resume is not None:
            resume, earlier_s, start = None, 0.0, time.time()
            state, metrics = run_trial(experiment, pred_len, params, overrides, run_dir, deadline)
        resume = None
        if state != "OOM" or time.time() + OOM_WAIT_S >= deadline:
            break
    wall_s = earlier_s + time.time() - start
    if state == "STOPPED" and run_dir.exists():
        mark_stopped(run_dir, params, wall_s)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return ("FAIL" if state == "OOM" else state), metrics, wall_s


def _out_of_memory(trial: dict) -> bool:
    """Whether a recorded trial failed only by running out of GPU memory, and may be run again."""
    oom = any(e in trial["metrics"].get("error", "") for e in OOM_ERRORS)
    return trial["state"] == "FAIL" and oom and trial.get("attempts", 1) < OOM_ATTEMPTS


def search(experiment: str, pred_len: int, seq_len: int, config: dict, overrides: list[str], out: Path,
           deadline: float, lock: threading.Lock, work: Path | None = None, last_start: float | None = None) -> dict:
    """Run one study until it has n_trials finished trials or the deadline; returns its summary. work: where
    the trials' run folders go (a temporary folder when None); last_start: no trial starts after this time (by
    default the deadline)."""
    name = f"{experiment}_L{seq_len}_H{pred_len}"
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    trials = load_trials(folder / "trials.json")
    # The sampler's random state as the last trial left it, so a search run in several calls asks what one
    # uninterrupted call would.
    saved = folder / "sampler.json"
    sampler = instantiate(config["sampler"])
    if trials:
        set_sampler_state(sampler, json.loads(saved.read_text()))
    study = optuna.create_study(study_name=name, sampler=sampler, direction=config["direction"])
    scratch = Path(tempfile.mkdtemp(prefix=f"{name}_")) if work is None else work / name
    overrides = [f"data.seq_len={seq_len}", *overrides]
    last_start = deadline if last_start is None else min(last_start, deadline)

    def record(number, params, state, metrics, value, wall_s, attempts=1):
        trial = {"number": number, "params": params, "state": state, "value": value,
                 "wall_time_s": round(wall_s, 1), "metrics": metrics}
        if attempts > 1:
            trial["attempts"] = attempts
        with lock:
            print(f"{name} trial {number}: {state} {config['metric']}={value}", flush=True)
        return trial

    def finish(state, metrics):
        value = metrics.get(config["metric"]) if state == "COMPLETE" else None
        if state == "COMPLETE" and value is None:
            state, metrics = "FAIL", {"error": f"metrics.json has no {config['metric']}", **metrics}
        return state, metrics, value

    def save():
        (folder / "trials.json").write_text(json.dumps(trials, indent=2) + "\n")
        saved.write_text(json.dumps(sampler_state(study.sampler)) + "\n")

    # Earlier trials that ran out of GPU memory are run again first (same number and parameters); the others
    # go to the study as they are.
    rerun = [i for i, t in enumerate(trials) if _out_of_memory(t)]
    restore(study, [t for i, t in enumerate(trials) if i not in rerun], config["space"])
    for i in rerun:
        if time.time() >= last_start:
            break
        old = trials[i]
        state, metrics, wall_s = run_until_it_fits(experiment, pred_len, old["params"], overrides,
                                                   scratch / str(old["number"]), deadline)
        if state == "STOPPED":
            break
        state, metrics, value = finish(state, metrics)
        trials[i] = record(old["number"], old["params"], state, metrics, value, wall_s, old.get("attempts", 1) + 1)
        if not _out_of_memory(trials[i]):
            restore(study, [trials[i]], config["space"])
        save()
    while len(trials) < config["n_trials"] and time.time() < last_start:
        trial = study.ask(fixed_distributions=config["space"])
        state, metrics, wall_s = run_until_it_fits(experiment, pred_len, trial.params, overrides,
                                                   scratch / str(trial.number), deadline)
        if state == "STOPPED":
            break
        state, metrics, value = finish(state, metrics)
        if state == "COMPLETE":
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        trials.append(record(trial.number, trial.params, state, metrics, value, wall_s))
        save()
    if work is None:  # a given --work keeps the folders of runs stopped at the deadline, for the next call
        shutil.rmtree(scratch, ignore_errors=True)
    row = summary(folder, config["n_trials"])
    if row["best"] is not None and row["trials"] >= config["n_trials"] and not row["oom_reruns"]:
        results = {"name": "optuna", "best_params": row["best"]["params"], "best_value": row["best"]["value"],
                   "n_trials": row["trials"]}
        (folder / "optimization_results.yaml").write_text(OmegaConf.to_yaml(results))
    return row


def summary(folder: Path, n_trials: int) -> dict:
    """A study's trials so far: how many, failed, waiting to be run again (out of GPU memory), and the best."""
    trials = load_trials(folder / "trials.json")
    done = [t for t in trials if t["state"] == "COMPLETE"]
    oom = sum(map(_out_of_memory, trials))
    return {"study": folder.name, "trials": len(trials), "n_trials": n_trials,
            "failed": len(trials) - len(done) - oom, "oom_reruns": oom,
            "best": min(done, key=lambda t: t["value"]) if done else None}


def print_table(rows: list[dict], metric: str) -> None:
    print(f"\n| study | trials | failed | to run again (out of memory) | best {metric} | test/mse there "
          "| best parameters |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        best = r["best"] or {"value": float("nan"), "metrics": {}, "params": {}}
        params = " ".join(f"{k}={v}" for k, v in best["params"].items())
        print(f"| {r['study']} | {r['trials']}/{r['n_trials']} | {r['failed']} | {r['oom_reruns']} | "
              f"{best['value']:.4f} | {best['metrics'].get('test/mse', float('nan')):.4f} | {params} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the studies' state (and earlier calls')")
    parser.add_argument("--work", type=Path, help="the trials' run folders (default: a temporary folder)")
    parser.add_argument("--experiments", help="comma-separated experiment configs")
    parser.add_argument("--report", action="store_true", help="print the table of every study in --out; run nothing")
    parser.add_argument("--horizons", default="96,192,336,720")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--seed", type=int, default=2024, help="the sampler's seed (train.yaml's seed)")
    parser.add_argument("--stop-after", type=float, default=float("inf"), help="seconds; running trials are stopped")
    parser.add_argument("--start-until", type=float, help="seconds; no trial starts later (default: --stop-after)")
    parser.add_argument("overrides", nargs="*", help="passed to every trial (after --)")
    args = parser.parse_args()
    deadline = time.time() + args.stop_after
    last_start = None if args.start_until is None else time.time() + args.start_until
    config = search_config(args.seed)
    if args.report:
        folders = sorted(f for f in args.out.iterdir() if (f / "trials.json").exists())
        return print_table([summary(f, config["n_trials"]) for f in folders], config["metric"])
    if not args.experiments:
        parser.error("--experiments is required (or --report)")
    jobs = [(e, int(h)) for e in args.experiments.split(",") for h in args.horizons.split(",")]
    for e, h in jobs:
        write_setting(args.out / f"{e}_L{args.seq_len}_H{h}", e, h, args.seq_len, args.overrides)
    lock = threading.Lock()
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(search, e, h, args.seq_len, config, args.overrides, args.out, deadline, lock,
                               args.work, last_start) for e, h in jobs]
        rows = [f.result() for f in futures]
    print_table(rows, config["metric"])

if __name__ == "__main__":
    main()
