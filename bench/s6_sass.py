"""What the Triton compiler makes of the S6 kernels for an H100, on any machine (no GPU needed).

    python bench/s6_sass.py [--mixer token|channel|scan|long] [--out DIR]

Runs one forward and backward of ViM2's token mixer (`CrossScanSSM`), its channel mixer
(`ChannelWiseSelectiveMixer`) or, with `scan`, of a single-direction `selective_scan_fn` (gate, D,
delta_bias, grouped B and C) split into segments as a long scan on a GPU would be, or with `long` one that
the tiled forward (`triton_tiled`) takes, in bf16 with the kernel
launches intercepted, then compiles each distinct launch for sm_90 as Triton's runtime would specialise it
(Triton's own specialisation: integer arguments equal to 1 become constants, those divisible by 16 and
16-byte-aligned pointers get divisibility hints, inside tuples too), with the ptxas and nvdisasm that ship
in Triton's wheel. Prints each kernel's register tile layouts (TTGIR), registers and spills
(ptxas -v) and the instruction mix of each loop of the SASS; with --out, writes the TTGIR, PTX and SASS
there. The grid's sizes do not change the code, so a small input stands in for the training shapes.
"""

from __future__ import annotations

import argparse
import collections
import inspect
import os
import re
import subprocess

import torch
import triton
from triton._C.libtriton import native_specialize_impl
from triton._utils import find_paths_if, get_iterable_path
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend
from triton.compiler import ASTSource

import mambamixer.kernels._backend as backend
from mambamixer.kernels.selective_scan import triton_op
from mambamixer.kernels.selective_scan.interface import selective_scan_fn
from mambamixer.mixer import ChannelWiseSelectiveMixer, CrossScanSSM

TOOLS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
TARGET = GPUTarget("cuda", 90, 32)
KERNELS = ("s6_fwd_kernel", "s6_bwd_kernel", "s6_segment_states_kernel", "s6_segment_adjoints_kernel",
           "s6_fwd_tiled_kernel")


class Recorder:
    """Stands in for a kernel: records each launch's arguments instead of running it."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((self.kernel, args, kwargs))


def record_launches(mixer: str) -> list:
    launches = []
    backend.INTERPRET = True  # let backend="triton" take CPU tensors; the kernels never run
    for name in KERNELS:
        setattr(triton_op, name, Recorder(getattr(triton_op, name), launches))
    torch.manual_seed(0)
    if mixer in ("scan", "long"):
        if mixer == "scan":
            triton_op.segments = lambda programs, length, chunk, device: (4, length // 4)
        else:
            triton_op.tiled_min_length = lambda device: 1
        batch, dim, length, n = 2, 64, 512 if mixer == "scan" else 1024, 16
        u, delta, z = (torch.randn(batch, dim, length, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        B, C = (torch.randn(batch, 2, n, length, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
        A = -torch.rand(dim, n).requires_grad_(True)
        D, bias = (torch.randn(dim, requires_grad=True) for _ in range(2))
        y = selective_scan_fn(u, delta, A, B, C, D, z, bias, delta_softplus=True, backend="triton")
    else:
        if mixer == "token":
            layer, x = CrossScanSSM(96, backend="triton"), torch.randn(2, 8, 8, 96)
        else:
            layer, x = ChannelWiseSelectiveMixer(96, backend="triton"), torch.randn(2, 64, 96)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x.requires_grad_(True))
    try:
        y.float().sum().backward()
    except Exception:  # the recorded backward leaves its buffers empty; what follows it does not matter
        pass
    return launches


def specialise(kernel, args, kwargs):
    """(signature, constexprs, attrs) as Triton's launcher builds them for these arguments (tuples included)."""
    params = inspect.signature(kernel.fn).parameters
    values = [args[i] if i < len(args) else kwargs[name] for i, name in enumerate(params)]
    specs = [("constexpr", value) if "constexpr" in str(param.annotation)
             else native_specialize_impl(CUDABackend, value, False, True, True)
             for param, value in zip(params.values(), values)]
    types = [spec[0] for spec in specs]
    constexprs = {path: get_iterable_path(values, path) for path in find_paths_if(types, lambda _, t: t == "constexpr")}
    hints = ["" if spec[0] == "constexpr" else spec[1] for spec in specs]
    backend = CUDABackend(TARGET)
    attrs = {path: backend.parse_attr(get_iterable_path(hints, path))
             for path in find_paths_if(hints, lambda _, hint: isinstance(hint, str))}
    return dict(zip(params, types)), constexprs, attrs


def loops(sass: str) -> list[collections.Counter]:
    """The opcode counts of each backward branch's body (each loop), innermost loops first."""
    labels, insts, found = {}, [], []
    for line in sass.splitlines():
        label = re.match(r"^\s*(\.L_x_\d+):", line)
        if label:
            labels[label.group(1)] = len(insts)
            continue
        inst = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?);", line)
        if inst:
            insts.append(inst.groups())
    for i, (op, operands) in enumerate(insts):
        target = re.search(r"(\.L_x_\d+)", operands) if op.startswith("BRA") else None
        if target and labels.get(target.group(1), i + 1) < i:
            found.append(collections.Counter(o.split(".")[0] for o, _ in insts[labels[target.group(1)]:i + 1]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixer", choices=["token", "channel", "scan", "long"], default="token")
    parser.add_argument("--out")
    args = parser.parse_args()
    seen = set()
    for kernel, launch_args, kwargs in record_launches(args.mixer):
        signature, constexprs, attrs = specialise(kernel, launch_args, kwargs)
        key = (kernel.fn.__name__, repr(sorted(constexprs.items())), repr(sorted(attrs.items())))
        if key in seen:
            continue
        seen.add(key)
        name = f"{kernel.fn.__name__}_cols{int(kwargs.get('COLS', 0))}_proj{int(kwargs.get('PROJ', 0))}_{len(seen)}"
        compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=TARGET,
                                  options={"num_warps": kwargs.get("num_warps", 4),
                                           "maxnreg": kwargs.get("maxnreg")})
        ttgir, ptx = compiled.asm["ttgir"], compiled.asm["ptx"]
        cubin = os.path.join(args.out or "/tmp", name + ".cubin")
        os.makedirs(os.path.dirname(cubin), exist_ok=True)
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        sass = subprocess.run([os.path.join(TOOLS, "nvdisasm"), "-c", cubin], capture_output=True, text=True).stdout
        with open(cubin[:-6] + ".ptx", "w") as f:
            f.write(ptx)
        report = subprocess.run([os.path.join(TOOLS, "ptxas"), "-arch=sm_90a", "-v", cubin[:-6] + ".ptx", "-o",
                                 os.devnull], capture_output=True, text=True).stderr
        if args.out:
            for ext, text in (("ttgir", ttgir), ("sass", sass)):
                with open(os.path.join(args.out, f"{name}.{ext}"), "w") as f:
                    f.write(text)
        block = f"BLOCK_T {kwargs['BLOCK_T']}" if "BLOCK_T" in kwargs else f"BLOCK_D {kwargs['BLOCK_D']}"
        print(f"== {name} ({block}, CHUNK {kwargs.get('CHUNK')}, {kwargs.get('num_warps')} warps)")
        print("   " + "; ".join(line.split(":", 1)[-1].strip() for line in report.splitlines()
                                 if "registers" in line or "spill" in line))
        for line in ttgir.splitlines():
            if line.startswith("#blocked"):
                print("   " + line.split("<", 1)[1].rstrip(">"))
        for counts in loops(sass):
            if sum(counts.values()) > 20:
                print(f"   loop of {sum(counts.values())} instructions: "
                      + ", ".join(f"{op} {n}" for op, n in counts.most_common(12)))


if __name__ == "__main__":
    main()
