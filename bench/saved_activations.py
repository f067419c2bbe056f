"""What a model keeps for its backward: the bytes autograd saves in one training forward, by module, on CPU.

    python bench/saved_activations.py --models vim2_tiny,convnext_tiny [--batch 1] [--size 224] [--out DIR]

Under bf16 autocast, channels-last input, as `bench/vision.py` trains. Every tensor saved for the backward
(`torch.autograd.graph.saved_tensors_hooks`) is counted once per storage, parameters excluded, and charged
to the module running when it was first saved (the innermost two module classes name it). The forward runs
at --batch and at twice it, and the difference is what each image adds: what does not grow with the batch
(the bf16 copies of the weights autocast saves) drops out. ViM2 runs its
S6 scans on the Triton path with the kernel launches left out (TRITON_INTERPRET=1, launches that do
nothing): the ops allocate and save exactly what they do on a GPU, so the count is the GPU path's, in
seconds on any machine; the outputs are not computed. Activation memory is most of a training step's peak
(BENCHMARKS.md compares the two). Prints a table per model; with --out, writes DIR/saved_activations.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are defined: the Triton path on CPU tensors

import timm  # noqa: E402
import torch  # noqa: E402
from s6_host import skip_launches  # noqa: E402

import mambamixer  # noqa: E402, F401  (registers the ViM2 models)


def saved_by_module(name: str, batch: int, size: int) -> tuple[dict[str, int], int]:
    """Bytes saved for the backward by module path (innermost two classes) and the model's parameter count."""
    kwargs = {"backend": "triton"} if name.startswith("vim2") else {}
    model = timm.create_model(name, **kwargs).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    stack, seen, saved = ["model"], set(), collections.Counter()

    def enter(module, args):
        stack.append(type(module).__name__)

    def leave(module, args, out):
        stack.pop()

    for module in model.modules():
        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            saved["/".join(stack[-2:])] += storage.nbytes()
        return t

    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    return dict(saved.most_common()), sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=lambda s: s.split(","), default=["vim2_tiny", "convnext_tiny"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    skip_launches()
    rows = []
    for name in args.models:
        once, n_params = saved_by_module(name, args.batch, args.size)
        twice, _ = saved_by_module(name, 2 * args.batch, args.size)
        per_image = {k: (v - once.get(k, 0)) / args.batch / 2**20 for k, v in twice.items()}
        per_image = dict(sorted(per_image.items(), key=lambda kv: -kv[1]))
        total = sum(per_image.values())
        rows.append({"model": name, "size": args.size, "parameters": n_params, "saved_mib_per_image": total,
                     "by_module_mib_per_image": per_image})
        print(f"\n{name}, {args.size} px: {total:.1f} MiB saved per image ({total * 128 / 2**10:.2f} GiB at batch "
              "128)")
        print("| module (innermost two) | MiB per image | share |\n| --- | ---: | ---: |")
        for module, mib in per_image.items():
            if mib >= 0.005 * total:
                print(f"| {module} | {mib:.1f} | {100 * mib / total:.1f} % |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "saved_activations.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
