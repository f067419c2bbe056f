"""Forecasting benchmark: train.py over experiments x input lengths x horizons, several runs at once.

    python bench/forecasting.py --out DIR --experiments tsm2_etth1,dlinear_etth1 --seq-lens 512,96 \
        --horizons 96,192,336,720 --jobs 8 -- trainer=gpu [more overrides]

Each run is `python train.py experiment=E data.seq_len=L data.pred_len=H <overrides>` in its own
process (hydra.run.dir=RUNS/E_L_H, RUNS defaulting to DIR/runs). Writes DIR/forecasting.json (one row
per run: the command, test MSE/MAE, epochs, parameters, wall time) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(experiment: str, seq_len: int, pred_len: int, overrides: list[str], runs: Path) -> dict:
    run_dir = runs / f"{experiment}_{seq_len}_{pred_len}"
    args = [f"experiment={experiment}", f"data.seq_len={seq_len}", f"data.pred_len={pred_len}", *overrides]
    command = "python train.py " + " ".join(args)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    start = time.time()
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            env=env, capture_output=True, text=True)
    row = {"experiment": experiment, "seq_len": seq_len, "pred_len": pred_len, "command": command,
           "wall_time_s": round(time.time() - start, 1), "returncode": result.returncode}
    if result.returncode == 0:
        row.update(json.loads((run_dir / "metrics.json").read_text()))
    else:
        row["error"] = (result.stdout + result.stderr)[-2000:]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where forecasting.json goes")
    parser.add_argument("--runs", type=Path, help="where the runs' output directories go (default OUT/runs)")
    parser.add_argument("--experiments", required=True, help="comma-separated experiment configs")
    parser.add_argument("--seq-lens", default="512")
    parser.add_argument("--horizons", default="96,192,336,720")
    parser.add_argument("--jobs", type=int, default=4, help="runs at once")
    parser.add_argument("overrides", nargs="*", help="passed to every train.py run (after --)")
    args = parser.parse_args()
    jobs = [(e, int(s), int(h)) for e in args.experiments.split(",") for s in args.seq_lens.split(",")
            for h in args.horizons.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, *job, args.overrides, args.runs or args.out / "runs") for job in jobs]
        for future in as_completed(futures):  # written as runs finish, so a cut-off call keeps what ran
            rows.append(future.result())
            (args.out / "forecasting.json").write_text(json.dumps(rows, indent=2) + "\n")
    rows.sort(key=lambda r: (r["experiment"], -r["seq_len"], r["pred_len"]))
    print(f"{'experiment':<18}{'L':>5}{'H':>5}{'test MSE':>10}{'test MAE':>10}{'epochs':>8}{'time s':>8}")
    for r in rows:
        if r["returncode"]:
            print(f"{r['experiment']:<18}{r['seq_len']:>5}{r['pred_len']:>5}  FAILED: {r['error'][-300:]}")
        else:
            print(f"{r['experiment']:<18}{r['seq_len']:>5}{r['pred_len']:>5}{r['test/mse']:>10.4f}"
                  f"{r['test/mae']:>10.4f}{r['epochs']:>8}{r['wall_time_s']:>8.0f}")


if __name__ == "__main__":
    main()
