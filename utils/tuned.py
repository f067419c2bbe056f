"""Tuned settings per (experiment, data, input length, horizon): a search's best overrides, saved as one
small config that later runs of the same experiment pick up.

    python train.py -m hparams_search=tsm2_optuna experiment=tsm2_etth1 data.pred_len=720   # search
    python -m mambamixer.utils.tuned multirun/tsm2_etth1/<date>_<time>_<id>               # save its best
    python train.py experiment=tsm2_etth1 data.pred_len=720                                 # uses them

A study folder of `bench/tsm2_search.py` (which writes the setting's config.yaml and overrides.yaml beside
its optimization_results.yaml) is saved from the same way as Hydra's multirun folder.

A tuned file is `conf/tuned/<task_name>/<data file>_L<seq_len>_H<pred_len>.yaml`: dotted config keys and
their values, as the search's `optimization_results.yaml` gives them in `best_params`, with the search's fixed
dotted overrides and its trials' `trainer.max_epochs`. `train.py` applies it under the command line (a key
given there keeps its value) unless `use_tuned=false`; searches run with it off.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

#: Keys that name the setting a tuned file belongs to, not part of it.
_RUN_KEYS = ("data.seq_len", "data.pred_len")

#: The package's tuned settings, next to its other configs.
TUNED_DIR = Path(__file__).resolve().parents[1] / "conf" / "tuned"


def tuned_path(tuned_dir: Path, cfg: DictConfig) -> Path:
    """`tuned_dir`/<task_name>/<data file>_L<seq_len>_H<pred_len>.yaml for a composed (or a run's saved) config:
    the data file is part of the name, so `experiment=tsm2_etth1 data=etth2` does not take ETTh1's settings."""
    data = Path(cfg.data.get("file") or "data").stem
    return Path(tuned_dir) / cfg.task_name / f"{data}_L{cfg.data.seq_len}_H{cfg.data.pred_len}.yaml"


def apply_tuned(cfg: DictConfig, command_line: list[str], tuned_dir: Path = TUNED_DIR) -> dict | None:
    """Set `cfg`'s keys from its tuned file, if `cfg.use_tuned` and the file exists, except the keys given on
    `command_line` (Hydra's task overrides); returns what was set with the file's path, or None."""
    if not cfg.get("use_tuned") or "pred_len" not in cfg.get("data", {}):
        return None
    path = tuned_path(tuned_dir, cfg)
    if not path.exists():
        return None
    settings = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a mapping of config keys to values, got {settings!r}")
    given = {o.key_or_group for o in OverridesParser.create().parse_overrides(command_line)}
    applied = {}
    for key, value in settings.items():
        if key in given:
            continue
        if OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise ValueError(f"{path}: key '{key}' is not in the config of experiment {cfg.task_name}")
        OmegaConf.update(cfg, key, value, merge=False)
        applied[key] = value
    return {"file": str(path), "settings": applied}


def save_tuned(sweep_dir: Path, tuned_dir: Path = TUNED_DIR) -> Path:
    """Write the best overrides of the search in `sweep_dir` (its optimization_results.yaml), with the search's
    fixed dotted overrides, as the tuned file of the experiment, data, input length and horizon it searched;
    returns the file's path."""
    sweep_dir = Path(sweep_dir)
    results_file = sweep_dir / "optimization_results.yaml"
    if not results_file.exists():
        raise FileNotFoundError(f"{results_file}: not found; sweep_dir must be a finished search's folder "
                                "(python train.py -m hparams_search=...)")
    results = OmegaConf.load(results_file)
    trial_config = sweep_dir / "config.yaml"  # bench/tsm2_search.py's study folder holds its setting itself
    if not trial_config.exists():
        trial_config = next(iter(sorted(sweep_dir.glob("*/.hydra/config.yaml"))), None)
    if trial_config is None:
        raise FileNotFoundError(f"{sweep_dir}: no trial folder with .hydra/config.yaml, nor a config.yaml")
    cfg = OmegaConf.load(trial_config)
    # The search's own fixed overrides (model.revin_stats=window, say) are part of what it found best.
    overrides = OverridesParser.create().parse_overrides(list(OmegaConf.load(trial_config.parent / "overrides.yaml")))
    fixed = {o.key_or_group: o.value() for o in overrides
             if "." in o.key_or_group and not (o.is_add() or o.is_delete() or o.is_sweep_override())
             and not o.key_or_group.startswith(("hydra.", "paths.")) and o.key_or_group not in _RUN_KEYS}
    # So is the number of epochs every trial could train (the cosine schedule's period, T_max): trainer=cpu
    # allows fewer than trainer=gpu, and a run of the setting under it would train on another schedule.
    settings = {**fixed, "trainer.max_epochs": cfg.trainer.max_epochs, **results.best_params}
    path = tuned_path(tuned_dir, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    trials = results.get("n_trials", len(list(sweep_dir.glob("*/.hydra"))))
    header = (f"# Tuned settings of experiment {cfg.task_name} at input length {cfg.data.seq_len}, horizon "
              f"{cfg.data.pred_len}:\n# the best of {trials} trials of "
              f"{cfg.get('optimized_metric')} = {results.best_value:.6g} (seed {cfg.seed}).\n")
    path.write_text(header + OmegaConf.to_yaml(settings))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a finished search's folder (holds "
                        "optimization_results.yaml): Hydra's multirun folder or a tsm2_search study")
    parser.add_argument("--tuned-dir", type=Path, default=TUNED_DIR)
    args = parser.parse_args()
    print(save_tuned(args.sweep_dir, args.tuned_dir))


if __name__ == "__main__":
    main()
