"""Training steps per second of TSM2 on one GPU, one process alone and several at once: what a search trial costs.

    python bench/tsm2_step_rate.py --out DIR [--procs 1,12] [--seconds 20] \
        [--variant NAME="OVERRIDE OVERRIDE ..."]... -- [overrides for every variant]

Each process builds data, model and LightningModule from the Hydra config as train.py does (`trainer=gpu`,
then the common overrides, then the variant's; with `compile=...` the model is compiled as train.py does) and
trains with Lightning without validation, checkpoints, logger or progress bar. After `--warmup` steps it counts
the steps finished in `--seconds`, then runs one more step under torch's CUDA sync debug mode and records where
that step waits for the GPU (the innermost Python frames of each synchronizing call). With --profile, the timed
steps run under cProfile and the functions with the most time of their own (and the most in all) are kept, in
microseconds per step. For every variant and process count, all processes start together; the table gives
steps/s per process and summed over them, and the seconds from process start to the first step (compiling
included). Writes DIR/tsm2_step_rate.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(overrides: list[str], warmup: int, seconds: float, spawned_at: float, profile: bool) -> dict:
    """Train in this process; returns steps/s, time to the first step and the sync debug step's sync sites."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cuda = torch.cuda.is_available()

    def synchronize():
        if cuda:
            torch.cuda.synchronize()

    class StepClock(L.Callback):
        def __init__(self):
            self.first = self.start = None
            self.steps, self.elapsed, self.syncs, self._caught = 0, 0.0, Counter(), None
            self.profiler = cProfile.Profile() if profile else None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            step = trainer.global_step
            if step == 0:
                self.first = time.time()
            if step == warmup:
                synchronize()
                self.start = time.perf_counter()
                if self.profiler:
                    self.profiler.enable()
            elif self.start is not None and not self.elapsed and time.perf_counter() - self.start >= seconds:
                synchronize()
                self.elapsed, self.steps = time.perf_counter() - self.start, step - warmup
                if self.profiler:
                    self.profiler.disable()
                self._caught = warnings.catch_warnings()
                self._caught.__enter__()
                warnings.simplefilter("always")
                warnings.showwarning = self._record
                if cuda:
                    torch.cuda.set_sync_debug_mode("warn")

        def _record(self, message, category, filename, lineno, file=None, line=None):
            """Count a sync by its innermost Python frames (innermost first)."""
            frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.endswith("warnings.py")][-4:]
            own = any(Path(f.filename).name == Path(__file__).name for f in frames[-2:])  # this clock's switch
            if "synchronizing" in str(message) and not own:
                self.syncs[" < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))] += 1

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self._caught is not None:
                if cuda:
                    torch.cuda.set_sync_debug_mode("default")
                self._caught.__exit__(None, None, None)
                self._caught = None
                trainer.should_stop = True

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        trainer = [] if any(o.startswith("trainer=") for o in overrides) else ["trainer=gpu"]
        cfg = compose("train", overrides=[*trainer, "use_tuned=false", *overrides])
    L.seed_everything(cfg.seed)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, **datamodule.model_kwargs)
    if cfg.compile:  # as train.py does it
        model.compile(**({} if cfg.compile is True else OmegaConf.to_container(cfg.compile)))
    module = instantiate(cfg.task, model=model)
    clock = StepClock()
    trainer = instantiate(cfg.trainer, callbacks=[clock], logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, max_epochs=-1, max_steps=-1,
                          max_time=None, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    result = {"steps": clock.steps, "seconds": round(clock.elapsed, 3), "steps_per_s": clock.steps / clock.elapsed,
            "to_first_step_s": round(clock.first - spawned_at, 1), "syncs_per_step": dict(clock.syncs),
            "parameters": sum(p.numel() for p in model.parameters())}
    if profile:
        rows = [{"function": f"{Path(file).parent.name}/{Path(file).name}:{line}({name})", "calls": calls / clock.steps,
                 "own_us": own / clock.steps * 1e6, "cumulative_us": cum / clock.steps * 1e6}
                for (file, line, name), (_, calls, own, cum, _) in pstats.Stats(clock.profiler).stats.items()]
        result["profile"] = {key: sorted(rows, key=lambda r: -r[key])[:60] for key in ("own_us", "cumulative_us")}
    return result


def run_group(overrides: list[str], procs: int, args) -> list[dict]:
    """`procs` workers started together; their results."""
    command = [sys.executable, __file__, "--worker", "--warmup", str(args.warmup), "--seconds", str(args.seconds),
               "--spawned-at", str(time.time()), *(["--profile"] if args.profile else []), "--", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    running = [subprocess.Popen(command, cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(procs)]
    results = []
    for proc in running:
        out, err = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"worker failed ({proc.returncode}):\n{err[-3000:]}")
        results.append(json.loads(lines[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--procs", default="1,12", help="comma-separated process counts")
    parser.add_argument("--variant", action="append", default=[], help='NAME="overrides" (repeatable)')
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--profile", action="store_true", help="cProfile the timed steps")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="for every variant (after --)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.overrides, args.warmup, args.seconds, args.spawned_at, args.profile)))
        return
    if args.out is None:
        parser.error("--out is required")
    variants = dict(v.split("=", 1) for v in args.variant) or {"default": ""}
    rows = []
    print("| variant | processes | steps/s per process | steps/s in all | s to first step | syncs in one step |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, extra in variants.items():
        for procs in map(int, args.procs.split(",")):
            results = run_group([*args.overrides, *extra.split()], procs, args)
            rates = [r["steps_per_s"] for r in results]
            row = {"variant": name, "overrides": [*args.overrides, *extra.split()], "processes": procs,
                   "steps_per_s_per_process": sum(rates) / procs, "steps_per_s_total": sum(rates),
                   "to_first_step_s": max(r["to_first_step_s"] for r in results),
                   "syncs_per_step": results[0]["syncs_per_step"], "workers": results}
            rows.append(row)
            syncs = ", ".join(f"{k} x{v}" for k, v in row["syncs_per_step"].items()) or "none"
            print(f"| {name} | {procs} | {row['steps_per_s_per_process']:.1f} | {row['steps_per_s_total']:.1f} | "
                  f"{row['to_first_step_s']:.1f} | {syncs} |", flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "tsm2_step_rate.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
