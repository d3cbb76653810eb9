"""How long reading a GPEN ONNX export into the released key layout takes, on a full-size export made here.

The official GPEN-BFR-2048.onnx is not available offline, so this exports our own network (random weights, the
released GPEN-BFR-2048 config, batch 1) with ``torch.onnx.export(..., dynamo=True, opset_version=18)`` (needs the
``onnxscript`` package). The community files were made with the older TorchScript exporter, which cannot trace our
reference forward (its modulated convolution takes the kernel size from the weight's shape, which that exporter
leaves symbolic); the weight volume, and so the conversion time, is the same. The export takes minutes and writes a
~285 MB file, by default to a temporary folder that is removed afterwards (never commit it).

    python benchmarks/bench_onnx_import.py                  # GPEN-2048: export, then 3 conversions
    python benchmarks/bench_onnx_import.py --size 512 --keep out/gpen512.onnx

Prints the export time, the file size, each conversion's time (``read_state_dict``) and the largest difference
between the recovered and the original weights (after the folded scales are undone).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class _Reference:
    """The model's reference forward as a module (what ``torch.onnx.export`` traces)."""

    def __new__(cls, model):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, x):
                return self.model.reference_forward(x)

        return Wrapper()


def export(size: int, path: Path, *, seed: int = 0) -> dict:
    import torch
    from bench_gpen import _random_state_dict

    from gpen_arch import load_gpen

    model = load_gpen(_random_state_dict(size, seed), device="cpu", dtype=torch.float32).eval()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 3, size, size) * 2 - 1
    start = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(_Reference(model).eval(), (x,), str(path), dynamo=True, opset_version=18,
                          input_names=["input"], output_names=["output"], external_data=False)
    return {"seconds": time.perf_counter() - start, "original": original}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, choices=[256, 512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=3, help="conversions timed (default: %(default)s)")
    parser.add_argument("--keep", help="write the export here and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))

    from gpen_arch import read_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / f"GPEN-BFR-{args.size}.onnx"
        made = export(args.size, path)
        print(f"export (dynamo exporter, opset 18): {made['seconds']:.1f} s, "
              f"{path.stat().st_size / 1e6:.1f} MB")
        for i in range(args.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            sd = read_state_dict(path)
            print(f"read_state_dict #{i + 1}: {time.perf_counter() - start:.2f} s wall, "
                  f"{time.process_time() - cpu:.2f} s CPU ({len(sd)} tensors)")
        worst = max((sd[k] - v).abs().max().item() / max(v.abs().max().item(), 1e-12)
                    for k, v in made["original"].items())
        print(f"largest relative difference to the original weights: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
