"""Benchmark the GPEN network: time per face, peak memory and output error, optionally beside the official code.

Each measurement runs in a fresh subprocess, so peak RSS is that configuration's own. Weights are random but
full-size (every parameter drawn so that every path contributes), identical for ours and the official network.

    python benchmarks/bench_gpen.py                                  # CPU: 512/1024/2048, fp32+bf16, batch 1 and 4
    python benchmarks/bench_gpen.py --sizes 2048 --dtypes fp32 --batches 1 --reference /path/to/GPEN
    python benchmarks/bench_gpen.py --sizes 2048 --dtypes fp32 --batches 1 --plain --onnxruntime
    python benchmarks/bench_gpen.py --device cuda --dtypes fp32 fp16 bf16 --batches 1 4

``--reference DIR`` points at a checkout of github.com/yangxy/GPEN; its ``face_model/gpen_model.py`` is imported
from there at run time (nothing of it is part of this project). ``--onnxruntime`` adds ONNX Runtime (CPU) running our
network exported to ONNX in this run (``torch.onnx.export``, the torch.export-based exporter, batch 1; the export
runs in a process of its own and is not timed), as people who use GPEN's ONNX files run it. ``--plain`` adds our
fast forward without strips (``FastOptions(banded=False)``, the default before ``gpen_arch/runtime/bands.py``), for a
before/after comparison in the same run. Each comparison row shows ours relative to it (time, peak memory, largest
output difference). ``CPU s`` is the process's CPU time per face (all threads), steadier than the wall time on a
shared machine. Figures are printed as a table; ``--json`` adds one JSON line per row.
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
sys.path.insert(0, str(REPO_ROOT))
from gpen_arch.runtime.fast_plan import FastOptions  # noqa: E402
from gpen_arch.runtime.precision import DTYPES  # noqa: E402  (fp32 / fp16 / bf16, as the CLI and the nodes name them)


# ------------------------------------------------------------------------------------------------------- worker
def _random_state_dict(size: int, seed: int):
    import torch

    from gpen_arch import GPEN, RELEASED_CONFIGS

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
    if impl == "ours-plain":  # the fast forward without strips
        from gpen_arch import load_gpen

        model = load_gpen(sd, device=device, dtype=dtype)
        model.fast_options = FastOptions(banded=False)
        return model
    if impl == "ours-reference":
        from gpen_arch import load_gpen

        model = load_gpen(sd, device=device, dtype=dtype)
        model.fast_options = FastOptions(use_fast_path=False)
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


PLAN_FLAGS = {  # flag: (FastOptions field, what auto means); each takes auto / on / off
    "fold-blur": ("fold_blur", "on CUDA only"),
    "subpixel": ("subpixel_upsample", "wherever blurs are folded"),
    "fused": ("fused_kernels", "on CUDA only"),
    "cudnn-benchmark": ("cudnn_benchmark", "on CUDA only"),
    "winograd": ("winograd", "on the CPU in float32"),
}
SWITCHES = {  # store_true flag (where a script has it): (FastOptions field, the value it sets)
    "contiguous": ("channels_last", False),
    "cuda_graphs": ("cuda_graphs", True),
}


def add_plan_flags(parser: argparse.ArgumentParser) -> None:
    """``--fold-blur``, ``--subpixel``, ``--fused``, ``--cudnn-benchmark``, ``--winograd``: auto / on / off."""
    for flag, (field, auto) in PLAN_FLAGS.items():
        parser.add_argument(f"--{flag}", choices=["auto", "on", "off"], default="auto",
                            help=f"FastOptions.{field} (auto: {auto})")


def fast_options(args: argparse.Namespace, base: FastOptions | None = None) -> FastOptions:
    """``base`` (default: the defaults) with what the flags of :data:`PLAN_FLAGS` and :data:`SWITCHES` ask for."""
    changes = {field: {"auto": None, "on": True, "off": False}[getattr(args, flag.replace("-", "_"))]
               for flag, (field, _) in PLAN_FLAGS.items()}
    changes.update({field: value for name, (field, value) in SWITCHES.items() if getattr(args, name, False)})
    return (base or FastOptions()).replace(**changes)


def apply_plan_flags(model, args: argparse.Namespace) -> None:
    """Set the model's ``fast_options`` from :func:`add_plan_flags`' arguments (and ``--contiguous`` /
    ``--cuda-graphs`` where the script has them), on top of what it already has."""
    model.fast_options = fast_options(args, model.fast_options)


def run_worker(args: argparse.Namespace) -> dict:
    import torch

    sys.path.insert(0, str(REPO_ROOT))
    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sd = _random_state_dict(args.size, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x32 = torch.rand(args.batch, 3, args.size, args.size, generator=gen) * 2 - 1
    model = _build(args.impl, args.size, sd, device, dtype, args.reference)
    ours = model if hasattr(model, "fast_options") else None  # the official network always runs as shipped
    if ours is not None:
        apply_plan_flags(ours, args)
    if args.compile:
        model = torch.compile(model)
    x = x32.to(device=device, dtype=dtype)
    rss_loaded = _peak_rss_bytes()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times, cpu_times = [], []
    with torch.inference_mode():
        if args.cuda_graphs and device.type == "cuda" and ours is not None:
            # cuDNN picks its algorithms in an eager forward first (its trial workspaces are not the model's
            # memory); the peak then counts the graph's capture, whose pool stays allocated while the graph lives
            graphed = ours.fast_options
            ours.fast_options = graphed.replace(cuda_graphs=False)
            model(x)
            ours.fast_options = graphed
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for i in range(args.warmup + args.runs):
            if device.type == "cuda" and i == args.warmup and not args.cuda_graphs:
                torch.cuda.reset_peak_memory_stats()
            sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            out = model(x)
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
    result = {
        "impl": args.impl, "device": device.type, "size": args.size, "dtype": args.dtype, "batch": args.batch,
        "ms_per_face": statistics.median(times) * 1000 / args.batch, "runs": len(times),
        "cpu_s_per_face": statistics.median(cpu_times) / args.batch,
        "peak_rss_mb": _peak_rss_bytes() / 2**20, "rss_after_load_mb": rss_loaded / 2**20,
    }
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    # folded weights cached by our fast forward
    result["derived_mb"] = ours.fast_path.derived.nbytes() / 2**20 if ours is not None else 0.0
    weights_mb += result["derived_mb"]
    if device.type == "cuda":
        result["peak_vram_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["activations_mb"] = result["peak_vram_mb"] - weights_mb
    else:
        result["activations_mb"] = result["peak_rss_mb"] - result["rss_after_load_mb"] - result["derived_mb"]
    if ours is not None:  # the estimate for the plan it ran (ours-plain: without strips)
        result["estimate_mb"] = ours.estimate_memory(args.batch, dtype) / 2**20
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


def export_onnx(args: argparse.Namespace) -> None:
    """Write our network (random weights of ``--seed``, float32, batch 1) to ``args.export_onnx`` as ONNX."""
    import torch

    sys.path.insert(0, str(REPO_ROOT))
    from gpen_arch import load_gpen

    model = load_gpen(_random_state_dict(args.size, args.seed), device="cpu", dtype=torch.float32)
    model.fast_options = FastOptions(use_fast_path=False)  # the plain layer-by-layer graph, as ONNX files have it
    x = torch.zeros(1, 3, args.size, args.size)
    torch.onnx.export(model, (x,), args.export_onnx, dynamo=True, opset_version=18, input_names=["input"],
                      output_names=["output"], external_data=True)


def run_onnx_worker(args: argparse.Namespace) -> dict:
    """Time ONNX Runtime (CPU) on the file :func:`export_onnx` wrote, on the same input as :func:`run_worker`."""
    import numpy as np
    import onnxruntime
    import torch

    if args.dtype != "fp32" or args.device != "cpu":
        raise SystemExit("the ONNX Runtime row runs float32 on the CPU only")
    options = onnxruntime.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = (torch.rand(args.batch, 3, args.size, args.size, generator=gen) * 2 - 1).numpy()
    session = onnxruntime.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    rss_loaded = _peak_rss_bytes()
    times, cpu_times, outputs = [], [], []
    for i in range(args.warmup + args.runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        outputs = [session.run(None, {"input": x[j:j + 1]})[0] for j in range(args.batch)]  # batch-1 graph
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    if args.save_output:
        torch.save(torch.from_numpy(np.concatenate(outputs)), args.save_output)
    return {"impl": "onnxruntime", "device": "cpu", "size": args.size, "dtype": args.dtype, "batch": args.batch,
            "ms_per_face": statistics.median(times) * 1000 / args.batch, "runs": len(times),
            "cpu_s_per_face": statistics.median(cpu_times) / args.batch,
            "peak_rss_mb": _peak_rss_bytes() / 2**20, "rss_after_load_mb": rss_loaded / 2**20, "derived_mb": 0.0,
            "activations_mb": (_peak_rss_bytes() - rss_loaded) / 2**20}


# ------------------------------------------------------------------------------------------------------ driver
def _spawn(args: argparse.Namespace, **overrides) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", "--seed", str(args.seed), "--warmup", str(args.warmup),
           "--runs", str(args.runs)]
    params = {"impl": "ours", "device": args.device, "threads": args.threads,
              "contiguous": args.contiguous, "compile": args.compile,
              "cuda_graphs": args.cuda_graphs,
              **{flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag in PLAN_FLAGS}, **overrides}
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


def _row_line(label: str, row: dict, ours: dict | None = None, difference: float | None = None) -> str:
    """One table row; with ``ours``, also ours relative to this row (time, peak memory) and the output difference."""
    peak = row.get("peak_vram_mb", row["peak_rss_mb"])
    diff = row.get("max_abs_vs_fp32")
    estimate = f"{row['estimate_mb']:.0f}" if "estimate_mb" in row else "-"
    line = (f"{row['size']:>5} {row['dtype']:>5} {row['batch']:>5} {label:>11} {row['ms_per_face']:>10.1f} "
            f"{row['cpu_s_per_face']:>9.1f} {peak:>9.0f} {row['activations_mb']:>8.0f} {estimate:>8} "
            f"{row['derived_mb']:>8.0f} {(f'{diff:.2e}' if diff is not None else '-'):>15}")
    if ours is not None:
        ours_peak = ours.get("peak_vram_mb", ours["peak_rss_mb"])
        line += (f"  ours: x{ours['ms_per_face'] / row['ms_per_face']:.2f} time "
                 f"(x{ours['cpu_s_per_face'] / row['cpu_s_per_face']:.2f} CPU time), x{ours_peak / peak:.2f} memory"
                 f"{f', max|d| {difference:.2e}' if difference is not None else ''}")
    return line


def _onnx_file(args: argparse.Namespace, size: int, folder: str) -> str | None:
    """Export our network at ``size`` to ONNX in ``folder`` (a process of its own); None if that failed."""
    path = os.path.join(folder, f"gpen_{size}.onnx")
    cmd = [sys.executable, __file__, "--export-onnx", path, "--size", str(size), "--seed", str(args.seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  ONNX export failed:\n{proc.stderr.strip()[-2000:]}", file=sys.stderr)
        return None
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when present)")
    parser.add_argument("--reference", help="checkout of the official GPEN repository to compare against")
    parser.add_argument("--onnxruntime", action="store_true",
                        help="compare against ONNX Runtime (CPU, fp32) running our network exported to ONNX")
    parser.add_argument("--plain", action="store_true",
                        help="compare against our fast forward without strips (FastOptions(banded=False))")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contiguous", action="store_true",
                        help="run our activations in NCHW instead of channels-last (our default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (ours only)")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay our forward through a CUDA graph")
    add_plan_flags(parser)
    parser.add_argument("--json", action="store_true", help="also print one JSON line per row")
    # worker-only flags
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--compare-fp32", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--save-output", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--export-onnx", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.export_onnx:
        export_onnx(args)
        return
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        print(json.dumps(run_onnx_worker(args) if args.impl == "onnxruntime" else run_worker(args)))
        return

    import tempfile

    import torch

    header = (f"{'size':>5} {'dtype':>5} {'batch':>5} {'impl':>11} {'ms/face':>10} {'CPU s':>9} {'peak MB':>9} "
              f"{'act. MB':>8} "
              f"{'est. MB':>8} {'cache MB':>8} {'max|d| vs fp32':>15}")
    options = [name for name, on in [("channels-first", args.contiguous), ("compile", args.compile),
                                     ("cuda-graphs", args.cuda_graphs)] if on]
    options += [f"{flag} {getattr(args, flag.replace('-', '_'))}" for flag in PLAN_FLAGS]
    print(f"device: {args.device}  threads: {args.threads or 'default'}  runs: {args.runs} (+{args.warmup} warm-up)"
          f"  options: {', '.join(options)}")
    print(header + ("  (comparison rows: ours relative to them)" if args.reference or args.onnxruntime or args.plain
                    else ""))
    with tempfile.TemporaryDirectory() as onnx_dir:
        for size in args.sizes:
            onnx_path = _onnx_file(args, size, onnx_dir) if args.onnxruntime else None
            for dtype in args.dtypes:
                for batch in args.batches:
                    with tempfile.TemporaryDirectory() as tmp:
                        ours_out = os.path.join(tmp, "ours.pt")
                        row = _spawn(args, size=size, dtype=dtype, batch=batch, compare_fp32=dtype != "fp32",
                                     save_output=ours_out)
                        if row is None:
                            continue
                        print(_row_line("ours", row), flush=True)
                        others = [("ours-plain", "plain", {}) if args.plain else None,
                                  ("official", "official", {"compile": False}) if args.reference else None,
                                  ("onnxruntime", "onnxruntime", {"onnx": onnx_path, "compile": False})
                                  if onnx_path and dtype == "fp32" and args.device == "cpu" else None]
                        for impl, label, extra in filter(None, others):
                            other_out = os.path.join(tmp, f"{impl}.pt")
                            other = _spawn(args, impl=impl, size=size, dtype=dtype, batch=batch,
                                           save_output=other_out, **extra)
                            if other is None:
                                continue
                            d = (torch.load(ours_out, weights_only=True)
                                 - torch.load(other_out, weights_only=True)).abs().max().item()
                            print(_row_line(label, other, row, d), flush=True)
                            row[impl] = other
                            row[f"max_abs_vs_{impl}"] = d
                        if args.json:
                            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
