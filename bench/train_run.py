"""One `train.py` run in its own process that can be stopped at a deadline and resumed in a later call.

A run stopped at a deadline leaves STOPPED in its folder: what run it was and the seconds it ran. A later
call that finds it, with the same run and a `checkpoints/last.ckpt` beside it, goes on from that checkpoint
(as `train.py ckpt_path=...` resumes a run) and counts both parts' wall time. bench/forecasting.py and
bench/tsm2_search.py run their training this way.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "train.py"
STOPPED = "stopped.json"  # in a run folder: which run was stopped at a deadline, and its wall time


def run_train(args: list[str], deadline: float = math.inf, train: Path = TRAIN) -> tuple[int | None, str]:
    """`python train.py *args` from the project root; (its return code, its stdout and stderr), or (None, "")
    when it was still running at `deadline` (time.time() seconds) and was killed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    timeout = None if deadline == math.inf else max(1.0, deadline - time.time())
    with subprocess.Popen([sys.executable, str(train), *args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return None, ""
    return proc.returncode, output


def mark_stopped(run_dir: Path, run: object, wall_s: float) -> None:
    """Record in run_dir that `run` (JSON: its command or parameters) was stopped after wall_s seconds."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STOPPED).write_text(json.dumps({"run": run, "wall_time_s": wall_s}) + "\n")


def stopped_run(run_dir: Path, run: object) -> tuple[Path | None, float]:
    """(its last checkpoint, the seconds it ran) when run_dir holds `run` stopped at an earlier deadline, else
    (None, 0.0). The record is used up: a run resumed and stopped again is marked again."""
    stopped, last = run_dir / STOPPED, run_dir / "checkpoints" / "last.ckpt"
    if not (stopped.exists() and last.exists()):
        return None, 0.0
    record = json.loads(stopped.read_text())
    stopped.unlink()
    return (last, record["wall_time_s"]) if record["run"] == run else (None, 0.0)
