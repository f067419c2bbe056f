"""Forecasting benchmark: train.py over experiments x input lengths x horizons x seeds, several runs at once.

    python bench/forecasting.py --out DIR --experiments tsm2_etth1,dlinear_etth1 --seq-lens 512,96 \
        --horizons 96,192,336,720 [--seeds 1,2,3] --jobs 8 -- trainer=gpu [more overrides]

Each run is `python train.py experiment=E data.seq_len=L data.pred_len=H [seed=S] <overrides>` in its own
process (hydra.run.dir=RUNS/E_L_H[_sS], RUNS defaulting to DIR/runs). Writes DIR/forecasting.json (one row
per run: the command, test MSE/MAE, epochs, parameters, wall time) as runs finish, and prints a table; with
several seeds, also each setting's test MSE and MAE as mean +- standard deviation over its seeds. A run whose
command already has a finished row in DIR/forecasting.json is not run again, so a call cut off by a time limit
is continued by the same command. With --stop-after S, runs still going after S seconds are stopped and none
starts later; the next call with the same RUNS goes on from each stopped run's last checkpoint (as `train.py
ckpt_path=...` resumes a run), and its row's wall time counts both parts.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from train_run import TRAIN, mark_stopped, run_train, stopped_run


def arguments(experiment: str, seq_len: int, pred_len: int, seed: int | None, overrides: list[str]) -> list[str]:
    """train.py's overrides for one run."""
    seed_arg = [] if seed is None else [f"seed={seed}"]
    return [f"experiment={experiment}", f"data.seq_len={seq_len}", f"data.pred_len={pred_len}", *seed_arg, *overrides]


def run_one(experiment: str, seq_len: int, pred_len: int, seed: int | None, overrides: list[str], runs: Path,
            deadline: float = math.inf) -> dict | None:
    """One run's row, or None when it was stopped at `deadline` (marked for the next call to go on from)."""
    run_dir = runs / (f"{experiment}_{seq_len}_{pred_len}" + ("" if seed is None else f"_s{seed}"))
    args = arguments(experiment, seq_len, pred_len, seed, overrides)
    command = "python train.py " + " ".join(args)
    resume, earlier_s = stopped_run(run_dir, command)
    start = time.time()
    returncode, output = run_train([*args, f"hydra.run.dir={run_dir}", *([f"ckpt_path={resume}"] if resume else [])],
                                   deadline, TRAIN)
    wall_s = earlier_s + time.time() - start
    if returncode is None:
        mark_stopped(run_dir, command, wall_s)
        return None
    row = {"experiment": experiment, "seq_len": seq_len, "pred_len": pred_len, "seed": seed, "command": command,
           "wall_time_s": round(wall_s, 1), "returncode": returncode}
    if returncode == 0:
        row.update(json.loads((run_dir / "metrics.json").read_text()))
    else:
        row["error"] = output[-2000:]
    return row


def _run_before(deadline: float, *job) -> dict | None:
    """`run_one(*job, deadline=deadline)`, or None without running once the deadline has passed."""
    return run_one(*job, deadline=deadline) if time.time() < deadline else None


def summary(rows: list[dict]) -> list[dict]:
    """Each (experiment, L, H)'s finished runs: test MSE and MAE as mean and standard deviation (ddof 1; 0 for
    one run) over its seeds."""
    settings = {}
    for r in rows:
        if not r["returncode"]:
            settings.setdefault((r["experiment"], r["seq_len"], r["pred_len"]), []).append(r)
    out = []
    for (experiment, seq_len, pred_len), runs in sorted(settings.items(), key=lambda kv: (kv[0][0], -kv[0][1],
                                                                                            kv[0][2])):
        row = {"experiment": experiment, "seq_len": seq_len, "pred_len": pred_len, "runs": len(runs)}
        for metric in ("test/mse", "test/mae"):
            values = [r[metric] for r in runs]
            row[metric] = statistics.mean(values)
            row[metric + "_std"] = statistics.stdev(values) if len(runs) > 1 else 0.0
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where forecasting.json goes")
    parser.add_argument("--runs", type=Path, help="where the runs' output directories go (default OUT/runs)")
    parser.add_argument("--experiments", required=True, help="comma-separated experiment configs")
    parser.add_argument("--seq-lens", default="512")
    parser.add_argument("--horizons", default="96,192,336,720")
    parser.add_argument("--seeds", help="comma-separated seeds, each run once per seed (default: the configs' seed)")
    parser.add_argument("--jobs", type=int, default=4, help="runs at once")
    parser.add_argument("--stop-after", type=float, default=math.inf,
                        help="seconds; runs still going are stopped, to go on in the next call")
    parser.add_argument("overrides", nargs="*", help="passed to every train.py run (after --)")
    args = parser.parse_args()
    deadline = time.time() + args.stop_after
    seeds = [None] if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    jobs = [(e, int(s), int(h), seed) for e in args.experiments.split(",") for s in args.seq_lens.split(",")
            for h in args.horizons.split(",") for seed in seeds]
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "forecasting.json"
    rows = [r for r in json.loads(results.read_text()) if not r["returncode"]] if results.exists() else []
    finished = {r["command"] for r in rows}
    jobs = [job for job in jobs if "python train.py " + " ".join(arguments(*job, args.overrides)) not in finished]
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(_run_before, deadline, *job, args.overrides, args.runs or args.out / "runs")
                   for job in jobs]
        for future in as_completed(futures):  # written as runs finish, so a cut-off call keeps what ran
            if (row := future.result()) is not None:
                rows.append(row)
                results.write_text(json.dumps(rows, indent=2) + "\n")
    rows.sort(key=lambda r: (r["experiment"], -r["seq_len"], r["pred_len"], r.get("seed") or 0))
    print(f"{'experiment':<18}{'L':>5}{'H':>5}{'seed':>6}{'test MSE':>10}{'test MAE':>10}{'epochs':>8}{'time s':>8}")
    for r in rows:
        seed = "" if r.get("seed") is None else r["seed"]
        if r["returncode"]:
            print(f"{r['experiment']:<18}{r['seq_len']:>5}{r['pred_len']:>5}{seed:>6}  FAILED: {r['error'][-300:]}")
        else:
            print(f"{r['experiment']:<18}{r['seq_len']:>5}{r['pred_len']:>5}{seed:>6}{r['test/mse']:>10.4f}"
                  f"{r['test/mae']:>10.4f}{r['epochs']:>8}{r['wall_time_s']:>8.0f}")
    if len(seeds) > 1:
        print(f"\n{'experiment':<18}{'L':>5}{'H':>5}{'runs':>6}{'test MSE':>18}{'test MAE':>18}")
        for r in summary(rows):
            print(f"{r['experiment']:<18}{r['seq_len']:>5}{r['pred_len']:>5}{r['runs']:>6}"
                  f"{r['test/mse']:>10.4f} +- {r['test/mse_std']:.4f}{r['test/mae']:>10.4f} +- {r['test/mae_std']:.4f}")


if __name__ == "__main__":
    main()
