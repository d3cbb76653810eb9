"""Profile one GPEN forward and print the most expensive kernels (CPU ops, or CUDA kernels on a GPU).

    python benchmarks/profile_gpen.py --size 2048 --dtype fp16 --device cuda [--subpixel on|off] [--fused on|off]
        [--cuda-graphs]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpen import DTYPES, _random_state_dict, add_plan_flags, apply_plan_flags

from gpen_arch import load_gpen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--contiguous", action="store_true")
    parser.add_argument("--compile", default=None, help="torch.compile mode, e.g. default or max-autotune")
    add_plan_flags(parser)
    parser.add_argument("--cuda-graphs", action="store_true", help="FastOptions.cuda_graphs")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    torch.backends.cudnn.benchmark = True
    model = load_gpen(_random_state_dict(args.size, 0), device=device, dtype=dtype)
    apply_plan_flags(model, args)  # --contiguous, --cuda-graphs and the auto / on / off flags: one table
    run = torch.compile(model, mode=args.compile) if args.compile else model
    x = torch.rand(args.batch, 3, args.size, args.size, device=device, dtype=dtype) * 2 - 1
    with torch.inference_mode():
        for _ in range(5):
            run(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            run(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"median-free mean: {(time.perf_counter() - start) * 100:.2f} ms per forward")
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            run(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
