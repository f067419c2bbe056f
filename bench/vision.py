"""ViM2 image benchmarks on one GPU: throughput next to timm's references, and digits accuracy by train.py.

    python bench/vision.py throughput --out DIR [--models vim2_tiny,...] [--sizes 224,512] [--batch 256]
                                      [--compile] [--ssm s6|ssd] [--vmamba DIR]
    python bench/vision.py digits --out DIR [train.py overrides ...]
    python bench/vision.py ddp --out DIR          # on a machine with two GPUs
    python bench/vision.py profile --out DIR [--models vim2_tiny,...] [--sizes 224,...] [--batch 256]
                                   [--ssm s6|ssd]

throughput: bf16 autocast, channels-last inputs, in one process: training img/s (forward, backward, AdamW
step) and inference img/s (forward under no_grad) from CUDA-event timing after warmup, and the peak GPU
memory of the training loop. A model that does not fit at the batch is retried at half the batch (the
table says which batch ran). --compile wraps each model in `torch.compile` (default inductor; the rows'
first_train_step_s and first_infer_step_s hold the compilation, which the timed steps do not). --ssm
builds the ViM2 models with that scan op (default s6, the paper's; ssd: Mamba-2 scalar-A heads) and names
the file after it. A ViM2 name with "+hybrid" appended (vim2_tiny+hybrid) times it with Jamba's pattern of
attention and mixture-of-experts blocks. --vmamba DIR adds VMamba's
`vanilla_vmamba_tiny` (the paper-era VMamba-T, mamba_ssm's CUDA scan) and `vmamba_tiny_s1l8` (VMamba-T v2,
its own CUDA kernels) from a checkout of github.com/MzeroMiko/VMamba whose compiled scan extensions
(`selective_scan_cuda` of mamba_ssm, `selective_scan_cuda_oflex` of VMamba) are importable; without it,
or when a model fails to build, those rows are skipped. Prints a table with each model's training and
inference throughput as a multiple of ConvNeXt-T's and DeiT-S's at the same size. Writes
DIR/vision_throughput.json (vision_throughput_compiled.json, vision_throughput_ssd.json).
digits: `python train.py experiment=vim2_digits trainer=gpu` for ViM2 (the experiment's small config and
vim2_tiny's sizes) and timm's DeiT-Tiny (patch 4 at 32 px) and ResNet-18 with the same data, recipe and
epochs, one after another. Writes DIR/vision_digits.json.
ddp: the digits experiment (augmentation off) on one GPU with batch 64 and through DDP on two GPUs with
batch 32 each (the same global batch and learning rate); prints both runs' per-epoch train and val loss
and their largest relative difference. Writes DIR/vision_ddp.json.
profile: the throughput run's training step under torch.profiler; GPU kernel time per step and its share by kind (the
S6 scan kernels of both mixers, GEMMs, normalisation, optimizer, copies, elementwise work, the rest), and
the training img/s the step would reach if the scan kernels took no time, and the 25 kernels that took the
most time (ms and launches per step). Writes DIR/vision_profile.json (vision_profile_ssd.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = ["deit_tiny_patch16_224", "deit_small_patch16_224", "convnext_tiny"]
#: VMamba's models timed with --vmamba: the paper-era VMamba-T that ViM2 builds on, and VMamba-T v2.
VMAMBA = ["vanilla_vmamba_tiny", "vmamba_tiny_s1l8"]


def import_vmamba(root: Path):
    """VMamba's `classification/models/vmamba.py` from a checkout at root (its FLOP counter's fvcore stubbed)."""
    import types

    try:
        import fvcore.nn  # noqa: F401
    except ImportError:  # vmamba.py imports fvcore only to count FLOPs, which the benchmark does not do
        fvcore = types.ModuleType("fvcore")
        fvcore.nn = types.ModuleType("fvcore.nn")
        for attr in ("FlopCountAnalysis", "flop_count_str", "flop_count", "parameter_count"):
            setattr(fvcore.nn, attr, None)
        sys.modules.update({"fvcore": fvcore, "fvcore.nn": fvcore.nn})
    models = str(root / "classification" / "models")
    if models not in sys.path:
        sys.path.insert(0, models)
    import vmamba

    return vmamba


#: A ViM2 name ending in this is built with Jamba's hybrid pattern (`mambamixer.mixer.Hybrid`'s defaults:
#: attention in block 4 of every 8, a 16-expert top-2 MoE MLP in every odd block), without rotary positions.
HYBRID = "+hybrid"


def build(name: str, size: int, ssm: str = "s6", vmamba_root: Path | None = None):
    if name in VMAMBA:
        model = getattr(import_vmamba(vmamba_root), name)()
        return model.cuda().to(memory_format=torch.channels_last)
    import timm

    import mambamixer  # noqa: F401  (registers ViM2)

    kwargs = {"img_size": size} if name.startswith("deit") else {"ssm": ssm} if name.startswith("vim2") else {}
    if name.endswith(HYBRID):
        name, kwargs["hybrid"] = name.removesuffix(HYBRID), {"rope": False}
    return timm.create_model(name, **kwargs).cuda().to(memory_format=torch.channels_last)


def timed(fn, warmup: int, iters: int) -> float:
    """Seconds per call of fn after `warmup` calls, from CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def training_step(model, run, size: int, batch: int):
    """A bf16 training step (forward, backward, fused AdamW) of `run` (the model or its compiled form)."""
    x = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(1000, (batch,), device="cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(run(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train_step, x


def measure(name: str, size: int, batch: int, warmup: int, iters: int, compile: bool = False,
            ssm: str = "s6", vmamba_root: Path | None = None) -> dict:
    model = build(name, size, ssm, vmamba_root)
    run = torch.compile(model) if compile else model
    train_step, x = training_step(model, run, size, batch)

    @torch.no_grad()
    def infer():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            run(x)

    model.train()
    torch.cuda.reset_peak_memory_stats()
    first_train_s = timed(train_step, 0, 1)  # with --compile: the compilation of the training graph
    train_s = timed(train_step, warmup, iters)
    peak = torch.cuda.max_memory_allocated() / 2**30
    model.eval()
    first_infer_s = timed(infer, 0, 1)
    infer_s = timed(infer, warmup, iters)
    params = sum(p.numel() for p in model.parameters())
    return {"model": name, "compiled": compile, "ssm": ssm if name.startswith("vim2") else None, "img_size": size,
            "batch": batch, "params_m": round(params / 1e6, 2),
            "train_img_s": round(batch / train_s, 1), "infer_img_s": round(batch / infer_s, 1),
            "train_peak_gib": round(peak, 2), "first_train_step_s": round(first_train_s, 1),
            "first_infer_step_s": round(first_infer_s, 1)}


def throughput(args) -> list[dict]:
    rows = []
    models = [*args.models, *(VMAMBA if args.vmamba else [])]
    for size in args.sizes:
        for name in models:
            batch = args.batch
            while True:
                try:
                    row = measure(name, size, batch, args.warmup, args.iters, args.compile, args.ssm, args.vmamba)
                    break
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    batch //= 2
                    if batch < 8:
                        row = {"model": name, "img_size": size, "error": "out of memory at batch 8"}
                        break
                except Exception as error:  # a peer's build (VMamba's extensions) failing skips its row
                    if name not in VMAMBA:
                        raise
                    row = {"model": name, "img_size": size, "error": f"{type(error).__name__}: {error}"[:500]}
                    break
            torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
    print_table(rows)
    return rows


def print_table(rows: list[dict]) -> None:
    """A markdown table of the rows, throughput as a multiple of ConvNeXt-T's and DeiT-S's at the same size, and
    peak training memory per image (a model that ran out of memory ran at a smaller batch) as ConvNeXt-T's."""
    refs = {(r["model"], r["img_size"]): r for r in rows if "error" not in r}
    print("| model | px | batch | params M | train img/s | infer img/s | train peak GiB "
          "| train, infer, memory per image vs ConvNeXt-T | train vs DeiT-S |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['img_size']} | | | {r['error'][:60]} | | | | |")
            continue
        cnx, deit = refs.get(("convnext_tiny", r["img_size"])), refs.get(("deit_small_patch16_224", r["img_size"]))
        vs_cnx = (f"{r['train_img_s'] / cnx['train_img_s']:.2f}, {r['infer_img_s'] / cnx['infer_img_s']:.2f}, "
                  f"{r['train_peak_gib'] / r['batch'] / (cnx['train_peak_gib'] / cnx['batch']):.2f}" if cnx else "")
        vs_deit = f"{r['train_img_s'] / deit['train_img_s']:.2f}" if deit else ""
        print(f"| {r['model']} | {r['img_size']} | {r['batch']} | {r['params_m']} | {r['train_img_s']} "
              f"| {r['infer_img_s']} | {r['train_peak_gib']} | {vs_cnx} | {vs_deit} |")


#: Kernel kinds of the profile, by substrings of the kernel name (first match wins; the rest is "other").
KERNEL_KINDS = {
    "S6 scan kernels": ("s6_fwd_kernel", "s6_bwd_kernel"),
    "GEMMs": ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul"),
    "normalisation": ("norm",),
    "optimizer": ("adam", "multi_tensor"),
    "copies, concatenation": ("copy", "catarray"),
    "elementwise, reductions": ("elementwise", "vectorized", "reduce"),
}


def profile(args) -> list[dict]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    rows = []
    for size in args.sizes:
        for name in args.models:
            model = build(name, size, args.ssm).train()
            train_step, _ = training_step(model, model, size, args.batch)
            step_s = timed(train_step, args.warmup, args.iters)
            with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(args.iters):
                    train_step()
                torch.cuda.synchronize()
            kinds = dict.fromkeys([*KERNEL_KINDS, "other"], 0.0)
            kernels = []
            for event in prof.key_averages():
                us = getattr(event, "self_device_time_total", 0) or 0
                if us <= 0:
                    continue
                kernel = event.key.lower()
                kind = next((k for k, keys in KERNEL_KINDS.items() if any(s in kernel for s in keys)), "other")
                kinds[kind] += us / 1e3 / args.iters
                kernels.append((us / 1e3 / args.iters, event.count // args.iters, event.key[:120]))
            busy = sum(kinds.values())
            row = {"model": name, "ssm": args.ssm if name.startswith("vim2") else None, "img_size": size,
                   "batch": args.batch, "step_ms": round(1e3 * step_s, 1),
                   "kernel_ms": {k: round(v, 1) for k, v in kinds.items()}, "kernel_busy_ms": round(busy, 1),
                   "kernel_share_pct": {k: round(100 * v / busy, 1) for k, v in kinds.items()},
                   "train_img_s": round(args.batch / step_s, 1),
                   "train_img_s_without_scans": round(args.batch / (step_s - kinds["S6 scan kernels"] / 1e3), 1),
                   "top_kernels": [{"ms": round(ms, 2), "calls": calls, "kernel": key}
                                   for ms, calls, key in sorted(kernels, reverse=True)[:25]]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            del model, train_step
            torch.cuda.empty_cache()
    return rows


DIGITS_RUNS = {
    "vim2_digits (ViM2, experiment config)": [],
    "vim2_tiny sizes": ["~model.dims", "~model.depths"],
    "deit_tiny (patch 4)": ["model.model_name=deit_tiny_patch16_224", "~model.dims", "~model.depths",
                            "+model.img_size=32", "+model.patch_size=4"],
    "resnet18": ["model.model_name=resnet18", "~model.dims", "~model.depths"],
}


def digits(args) -> list[dict]:
    rows = []
    for label, overrides in DIGITS_RUNS.items():
        run_dir = args.out / "digits" / label.split()[0]
        cmd = ["train.py", "experiment=vim2_digits", "trainer=gpu", *overrides, *args.overrides,
               f"hydra.run.dir={run_dir}"]
        start = time.time()
        result = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True)
        row = {"run": label, "command": "python " + " ".join(cmd[:-1]), "returncode": result.returncode,
               "wall_time_s": round(time.time() - start, 1)}
        if result.returncode == 0:
            row.update(json.loads((run_dir / "metrics.json").read_text()))
        else:
            row["error"] = (result.stdout + result.stderr)[-3000:]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "error"}), row.get("error", "")[-1500:], flush=True)
    return rows


# Same data, model and global batch; augmentation and Mixup off so the runs differ only in sample order
# (RandomSampler vs DistributedSampler) and floating-point order.
DDP_COMMON = ["experiment=vim2_digits", "data.mixup=0", "data.cutmix=0", "data.auto_augment=null", "data.re_prob=0",
              "data.scale=[1.0,1.0]", "callbacks.ema=null", "trainer.max_epochs=10", "data.num_workers=4"]
DDP_RUNS = {"gpu1_batch64": ["trainer=gpu", "data.batch_size=64"],
            "ddp2_batch32x2": ["trainer=ddp", "trainer.devices=2", "data.batch_size=32"]}


def epoch_curves(run_dir: Path) -> dict[str, list[float]]:
    """Per-epoch train/loss_epoch and val/loss from the run's CSV log."""
    import csv

    curves = {"train/loss_epoch": {}, "val/loss": {}}
    with open(run_dir / "logs" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for key, curve in curves.items():
                if row.get(key):
                    curve[int(row["epoch"])] = float(row[key])
    return {key: [curve[e] for e in sorted(curve)] for key, curve in curves.items()}


def ddp(args) -> list[dict]:
    rows = []
    for label, overrides in DDP_RUNS.items():
        run_dir = args.out / "ddp" / label
        cmd = ["train.py", *DDP_COMMON, *overrides, *args.overrides, f"hydra.run.dir={run_dir}"]
        result = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True)
        row = {"run": label, "command": "python " + " ".join(cmd[:-1]), "returncode": result.returncode}
        if result.returncode == 0:
            row.update(json.loads((run_dir / "metrics.json").read_text()), **epoch_curves(run_dir))
        else:
            row["error"] = (result.stdout + result.stderr)[-3000:]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "error"}), row.get("error", "")[-1500:], flush=True)
    if all(r["returncode"] == 0 for r in rows):
        for key in ("train/loss_epoch", "val/loss"):
            a, b = rows[0][key], rows[1][key]
            diff = max(abs(x - y) / abs(x) for x, y in zip(a, b))
            print(f"{key}: max relative difference over {len(a)} epochs {diff:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["throughput", "digits", "ddp", "profile"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", type=lambda s: s.split(","), default=["vim2_tiny", "vim2_small", *REFERENCES])
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[224, 512])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--ssm", choices=["s6", "ssd"], default="s6")
    parser.add_argument("--vmamba", type=Path, default=None, help="a VMamba checkout (throughput adds its rows)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {"throughput": throughput, "digits": digits, "ddp": ddp, "profile": profile}[args.what](args)
    meta = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__}
    name = f"vision_{args.what}{'_compiled' if args.what == 'throughput' and args.compile else ''}"
    name += "_ssd" if args.ssm == "ssd" and args.what in ("throughput", "profile") else ""
    (args.out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
