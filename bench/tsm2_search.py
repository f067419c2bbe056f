"""`hparams_search=tsm2_optuna` for many experiments and horizons at once, resumable across calls.

    python bench/tsm2_search.py --out DIR --experiments tsm2_etth1,tsm2_etth2,tsm2_exchange \
        --horizons 96,192,336,720 [--stop-after SECONDS] -- trainer=gpu [more overrides]

One Optuna study per (experiment, horizon), all running at once, each one trial at a time as
hydra-optuna-sweeper runs it with n_jobs 1: the search space, trial budget (n_trials), sampler and
objective (`optimized_metric`, the best validation MSE) are read from conf/hparams_search/tsm2_optuna.yaml.
A trial is `python train.py experiment=E data.pred_len=H use_tuned=false <its parameters> <overrides>` in
its own process and folder, DIR/<study>/<trial number>; its checkpoints are deleted once it ends.

Finished trials are written to DIR/<study>/trials.json as they end, with the sampler's state. A call finds
the trials of earlier calls there and gives them to the study, and the sampler as they left it, before
asking for more, so a search longer than one call runs in several and asks what one call would have.
Trials still running after --stop-after seconds are stopped and forgotten. A study with all its trials
writes DIR/<study>/optimization_results.yaml as the sweeper does, so `python -m mambamixer.utils.tuned
DIR/<study>` saves its best settings to conf/tuned/. Prints a table and writes DIR/tsm2_search.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
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


def load_trials(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def restore(study: optuna.Study, trials: list[dict], space: dict) -> None:
    """Add an earlier call's finished trials to the study, in their order."""
    for t in trials:
        state = optuna.trial.TrialState[t["state"]]
        value = t["value"] if state == optuna.trial.TrialState.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(params=t["params"], distributions=space, value=value, state=state))


def run_trial(experiment: str, pred_len: int, params: dict, overrides: list[str], run_dir: Path,
              deadline: float) -> tuple[str, dict]:
    """One training run; ("COMPLETE", metrics), ("FAIL", {"error": ...}) or ("STOPPED", {}) at the deadline."""
    args = [f"experiment={experiment}", f"data.pred_len={pred_len}", "use_tuned=false",
            *[f"{k}={v}" for k, v in params.items()], *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        try:
            output, _ = proc.communicate(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            shutil.rmtree(run_dir, ignore_errors=True)
            return "STOPPED", {}
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if proc.returncode != 0:
        return "FAIL", {"error": output[-2000:]}
    return "COMPLETE", json.loads((run_dir / "metrics.json").read_text())


def search(experiment: str, pred_len: int, seq_len: int, config: dict, overrides: list[str], out: Path,
           deadline: float, lock: threading.Lock) -> dict:
    """Run one study until it has n_trials finished trials or the deadline; returns its summary."""
    name = f"{experiment}_L{seq_len}_H{pred_len}"
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    trials = load_trials(folder / "trials.json")
    # The sampler as the last trial left it (Optuna's way to resume a seeded sampler), so a search run in
    # several calls asks what one uninterrupted call would.
    pickled = folder / "sampler.pkl"
    sampler = pickle.loads(pickled.read_bytes()) if trials and pickled.exists() else instantiate(config["sampler"])
    study = optuna.create_study(study_name=name, sampler=sampler, direction=config["direction"])
    restore(study, trials, config["space"])
    while len(trials) < config["n_trials"] and time.time() < deadline:
        trial = study.ask(fixed_distributions=config["space"])
        start = time.time()
        state, metrics = run_trial(experiment, pred_len, trial.params, [f"data.seq_len={seq_len}", *overrides],
                                   folder / str(trial.number), deadline)
        if state == "STOPPED":
            break
        value = metrics.get(config["metric"])
        if state == "COMPLETE" and value is None:
            state, metrics = "FAIL", {"error": f"metrics.json has no {config['metric']}", **metrics}
        if state == "COMPLETE":
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        trials.append({"number": trial.number, "params": trial.params, "state": state, "value": value,
                       "wall_time_s": round(time.time() - start, 1), "metrics": metrics})
        (folder / "trials.json").write_text(json.dumps(trials, indent=2) + "\n")
        pickled.write_bytes(pickle.dumps(study.sampler))
        with lock:
            print(f"{name} trial {trial.number}: {state} {config['metric']}={value}", flush=True)
    done = [t for t in trials if t["state"] == "COMPLETE"]
    best = min(done, key=lambda t: t["value"]) if done else None
    if best is not None and len(trials) >= config["n_trials"]:
        results = {"name": "optuna", "best_params": best["params"], "best_value": best["value"]}
        (folder / "optimization_results.yaml").write_text(OmegaConf.to_yaml(results))
    return {"study": name, "trials": len(trials), "n_trials": config["n_trials"], "failed": len(trials) - len(done),
            "best": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the studies' folders (and earlier calls' trials)")
    parser.add_argument("--experiments", required=True, help="comma-separated experiment configs")
    parser.add_argument("--horizons", default="96,192,336,720")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--seed", type=int, default=2024, help="the sampler's seed (train.yaml's seed)")
    parser.add_argument("--stop-after", type=float, default=float("inf"), help="seconds; running trials are stopped")
    parser.add_argument("overrides", nargs="*", help="passed to every trial (after --)")
    args = parser.parse_args()
    deadline = time.time() + args.stop_after
    config = search_config(args.seed)
    jobs = [(e, int(h)) for e in args.experiments.split(",") for h in args.horizons.split(",")]
    lock = threading.Lock()
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(search, e, h, args.seq_len, config, args.overrides, args.out, deadline, lock)
                   for e, h in jobs]
        rows = [f.result() for f in futures]
    (args.out / "tsm2_search.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n| study | trials | failed | best {config['metric']} | test/mse there | best parameters |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        best = r["best"] or {"value": float("nan"), "metrics": {}, "params": {}}
        params = " ".join(f"{k}={v}" for k, v in best["params"].items())
        print(f"| {r['study']} | {r['trials']}/{r['n_trials']} | {r['failed']} | {best['value']:.4f} | "
              f"{best['metrics'].get('test/mse', float('nan')):.4f} | {params} |")


if __name__ == "__main__":
    main()
