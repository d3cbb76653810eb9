"""Benchmark the GPEN network: time per face, peak memory and output error, optionally beside the official code.

Each measurement runs in a fresh subprocess, so peak RSS is that configuration's own. Weights are random but
full-size (every parameter drawn so that every path contributes), identical for ours and the official network.

    python benchmarks/bench_gpen.py                                  # CPU: 512/1024/2048, fp32+bf16, batch 1 and 4
    python benchmarks/bench_gpen.py --sizes 2048 --dtypes fp32 --batches 1 --reference /path/to/GPEN
    python benchmarks/bench_gpen.py --device cuda --dtypes fp32 fp16 bf16 --batches 1 4

``--reference DIR`` points at a checkout of github.com/yangxy/GPEN; its ``face_model/gpen_model.py`` is imported
from there at run time (nothing of it is part of this project). Figures are printed as a table; ``--json`` adds one
JSON line per row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


# ------------------------------------------------------------------------------------------------------- worker
def _random_state_dict(size: int, seed: int):
    import torch

    from gpen_arch import RELEASED_CONFIGS, GPEN

    torch.manual_seed(seed)
    model = GPEN(RELEASED_CONFIGS[size])
    sd = model.state_dict()
    for key, value in sd.items():
        if key.endswith(".kernel"):
            continue
        if key.endswith("noise.weight"):
            value.uniform_(0.2, 0.8)  # released models inject their features; zero would skip that path
        elif key.endswith("bias") and "modulation" not in key:
            value.normal_(0.0, 0.1)
    return sd


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _build(impl: str, size: int, sd, device, dtype, reference_dir: str | None):
    import torch

    if impl == "ours":
        from gpen_arch import load_gpen

        return load_gpen(sd, device=device, dtype=dtype)
    if impl == "ours-reference":
        from gpen_arch import load_gpen

        model = load_gpen(sd, device=device, dtype=dtype)
        model.use_fast_path = False
        return model
    sys.path.insert(0, str(Path(reference_dir) / "face_model"))
    from gpen_model import FullGenerator  # the official network, imported from the user's checkout

    from gpen_arch import RELEASED_CONFIGS

    cfg = RELEASED_CONFIGS[size]
    model = FullGenerator(size, 512, 8, cfg.channel_multiplier, narrow=cfg.narrow, device=str(device))
    model.load_state_dict(sd, strict=True)
    model.eval()

    class Official(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)[0]

    return Official(model).to(device=device, dtype=dtype)


GPU_OPTIONS = {  # flag: (GPEN attribute, what auto means); each takes auto / on / off
    "fold-blur": ("fold_blur", "on CUDA only"),
    "subpixel": ("subpixel_upsample", "wherever blurs are folded"),
    "fused": ("fused_kernels", "on CUDA only"),
    "cudnn-benchmark": ("cudnn_benchmark", "on CUDA only"),
}


def add_gpu_options(parser: argparse.ArgumentParser) -> None:
    """``--fold-blur``, ``--subpixel``, ``--fused``, ``--cudnn-benchmark``: auto / on / off."""
    for flag, (attribute, auto) in GPU_OPTIONS.items():
        parser.add_argument(f"--{flag}", choices=["auto", "on", "off"], default="auto",
                            help=f"GPEN.{attribute} (auto: {auto})")


def apply_gpu_options(model, args: argparse.Namespace) -> None:
    """Set the model's GPU options from :func:`add_gpu_options`' arguments."""
    for flag, (attribute, _) in GPU_OPTIONS.items():
        setattr(model, attribute, {"auto": None, "on": True, "off": False}[getattr(args, flag.replace("-", "_"))])


def run_worker(args: argparse.Namespace) -> dict:
    import torch

    sys.path.insert(0, str(REPO_ROOT))
    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device)
    dtype = getattr(torch, DTYPES[args.dtype])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sd = _random_state_dict(args.size, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x32 = torch.rand(args.batch, 3, args.size, args.size, generator=gen) * 2 - 1
    model = _build(args.impl, args.size, sd, device, dtype, args.reference)
    if hasattr(model, "channels_last"):  # ours; the official network always runs as shipped
        model.channels_last = not args.contiguous
        model.cuda_graphs = args.cuda_graphs
        apply_gpu_options(model, args)
    if args.compile:
        model = torch.compile(model)
    x = x32.to(device=device, dtype=dtype)
    rss_loaded = _peak_rss_bytes()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    with torch.inference_mode():
        if args.cuda_graphs and device.type == "cuda" and hasattr(model, "cuda_graphs"):
            # cuDNN picks its algorithms in an eager forward first (its trial workspaces are not the model's
            # memory); the peak then counts the graph's capture, whose pool stays allocated while the graph lives
            model.cuda_graphs = False
            model(x)
            model.cuda_graphs = True
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for i in range(args.warmup + args.runs):
            if device.type == "cuda" and i == args.warmup and not args.cuda_graphs:
                torch.cuda.reset_peak_memory_stats()
            sync()
            start = time.perf_counter()
            out = model(x)
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    result = {
        "impl": args.impl, "device": device.type, "size": args.size, "dtype": args.dtype, "batch": args.batch,
        "ms_per_face": statistics.median(times) * 1000 / args.batch, "runs": len(times),
        "peak_rss_mb": _peak_rss_bytes() / 2**20, "rss_after_load_mb": rss_loaded / 2**20,
    }
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    derived = getattr(model, "derived_weights", None)  # folded weights cached by our fast forward
    result["derived_mb"] = derived.nbytes() / 2**20 if derived is not None else 0.0
    weights_mb += result["derived_mb"]
    if device.type == "cuda":
        result["peak_vram_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["activations_mb"] = result["peak_vram_mb"] - weights_mb
    else:
        result["activations_mb"] = result["peak_rss_mb"] - result["rss_after_load_mb"] - result["derived_mb"]
    if hasattr(model, "estimate_memory"):
        result["estimate_mb"] = model.estimate_memory(args.batch, dtype) / 2**20
    out = out.float().cpu()
    if args.save_output:
        torch.save(out, args.save_output)
    if args.compare_fp32 and args.dtype != "fp32":
        model32 = _build(args.impl, args.size, sd, device, torch.float32, args.reference)
        with torch.inference_mode():
            ref = model32(x32.to(device)).float().cpu()
        result["max_abs_vs_fp32"] = (out - ref).abs().max().item()
        result["mean_abs_vs_fp32"] = (out - ref).abs().mean().item()
    return result


# ------------------------------------------------------------------------------------------------------ driver
def _spawn(args: argparse.Namespace, **overrides) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", "--seed", str(args.seed), "--warmup", str(args.warmup),
           "--runs", str(args.runs)]
    params = {"impl": "ours", "device": args.device, "threads": args.threads,
              "contiguous": args.contiguous, "compile": args.compile,
              "cuda_graphs": args.cuda_graphs,
              **{flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag in GPU_OPTIONS}, **overrides}
    for key, value in params.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        cmd += [flag] if value is True else [flag, str(value)]
    if args.reference:
        cmd += ["--reference", args.reference]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  failed: {' '.join(cmd[2:])}\n{proc.stderr.strip()[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when present)")
    parser.add_argument("--reference", help="checkout of the official GPEN repository to compare against")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contiguous", action="store_true",
                        help="run our activations in NCHW instead of channels-last (our default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (ours only)")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay our forward through a CUDA graph")
    add_gpu_options(parser)
    parser.add_argument("--json", action="store_true", help="also print one JSON line per row")
    # worker-only flags
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--compare-fp32", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--save-output", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        print(json.dumps(run_worker(args)))
        return

    import tempfile

    header = (f"{'size':>5} {'dtype':>5} {'batch':>5} {'impl':>9} {'ms/face':>10} {'peak MB':>9} {'act. MB':>8} "
              f"{'est. MB':>8} {'cache MB':>8} {'max|d| vs fp32':>15}")
    extra = "  vs official (time, memory, max|d|)" if args.reference else ""
    options = [name for name, on in [("channels-first", args.contiguous), ("compile", args.compile),
                                     ("cuda-graphs", args.cuda_graphs)] if on]
    options += [f"{flag} {getattr(args, flag.replace('-', '_'))}" for flag in GPU_OPTIONS]
    print(f"device: {args.device}  threads: {args.threads or 'default'}  runs: {args.runs} (+{args.warmup} warm-up)"
          f"  options: {', '.join(options)}")
    print(header + extra)
    for size in args.sizes:
        for dtype in args.dtypes:
            for batch in args.batches:
                with tempfile.TemporaryDirectory() as tmp:
                    ours_out = os.path.join(tmp, "ours.pt")
                    row = _spawn(args, size=size, dtype=dtype, batch=batch, compare_fp32=dtype != "fp32",
                                 save_output=ours_out)
                    if row is None:
                        continue
                    peak = row.get("peak_vram_mb", row["peak_rss_mb"])
                    diff = row.get("max_abs_vs_fp32")
                    line = (f"{size:>5} {dtype:>5} {batch:>5} {'ours':>9} {row['ms_per_face']:>10.1f} {peak:>9.0f} "
                            f"{row['activations_mb']:>8.0f} {row.get('estimate_mb', 0):>8.0f} "
                            f"{row['derived_mb']:>8.0f} "
                            f"{(f'{diff:.2e}' if diff is not None else '-'):>15}")
                    if args.reference:
                        off_out = os.path.join(tmp, "official.pt")
                        off = _spawn(args, impl="official", size=size, dtype=dtype, batch=batch, save_output=off_out,
                                     compile=False)
                        if off is not None:
                            import torch

                            d = (torch.load(ours_out, weights_only=True) - torch.load(off_out, weights_only=True)).abs().max().item()
                            off_peak = off.get("peak_vram_mb", off["peak_rss_mb"])
                            line += (f"  official {off['ms_per_face']:.1f} ms, {off_peak:.0f} MB -> "
                                     f"x{row['ms_per_face'] / off['ms_per_face']:.2f} time, x{peak / off_peak:.2f} "
                                     f"memory, max|d| {d:.2e}")
                            row["official"] = off
                            row["max_abs_vs_official"] = d
                    print(line, flush=True)
                    if args.json:
                        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
