"""How long Cancel can wait inside one GPEN forward: the gaps between the forward's Cancel checks
(gpen_arch/interrupt.py).

Builds a full-size GPEN with random weights (as ``bench_gpen.py`` does), runs forwards on the CPU with a hook that
records ``time.perf_counter()`` at each check, and prints per forward its time, the number of checks and the largest
gaps with the layers that ran in them (the fast forward's layer functions are wrapped to note each layer's name; a
name followed by ``...`` was already running at the gap's start). The first forward builds the derived weights and is
not counted. The load average is printed beside each forward: the machine may be shared.

    python benchmarks/bench_cancel_gaps.py                              # GPEN-2048, fp32, 2 forwards
    python benchmarks/bench_cancel_gaps.py --size 1024 --forwards 3 --top 8
    python benchmarks/bench_cancel_gaps.py --dtype bf16                 # no Winograd in bf16
    python benchmarks/bench_cancel_gaps.py --compare                    # + forwards without the checks inside
                                                                        #   Winograd convolutions, alternating

``--compare`` alternates forwards with and without the checks between the chunks of the Winograd convolutions
(``ops/winograd.py``; "without" replaces the check there by a no-op, the behaviour before it), to show that they cost
nothing measurable; both run with the same recording hook.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))


def _load(size: int, threads: int | None, dtype: str):
    import torch
    from bench_gpen import _random_state_dict

    from gpen_arch import load_gpen
    from gpen_arch.runtime.precision import DTYPES

    if threads:
        torch.set_num_threads(threads)
    # full-size random weights with every path contributing, as bench_gpen.py draws them
    model = load_gpen(_random_state_dict(size, seed=0), device="cpu", dtype=DTYPES[dtype])
    return model.eval()


class Recorder:
    """The Cancel hook: records the time of each check and the layers started since the previous one."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.current = "input"
        self.started: list[str] = []
        self.checks: list[tuple[float, list[str]]] = []

    def layer(self, module) -> None:
        self.current = self.names.get(id(module), type(module).__name__)
        self.started.append(self.current)

    def __call__(self) -> None:
        self.checks.append((time.perf_counter(), self.started or [self.current + " ..."]))
        self.started = []


def _wrap_layers(recorder: Recorder) -> None:
    """Make the fast forward's layer functions tell ``recorder`` which layer starts (their second argument)."""
    from gpen_arch.runtime import fast_forward as ff

    for name in ("_encoder_layer", "_styled_conv"):
        real = getattr(ff, name)
        setattr(ff, name, lambda model, layer, *a, _real=real, **k: (recorder.layer(layer),
                                                                      _real(model, layer, *a, **k))[1])
    real_rgb = ff._to_rgb
    ff._to_rgb = lambda layer, *a, **k: (recorder.layer(layer), real_rgb(layer, *a, **k))[1]


def _describe(labels: list[str]) -> str:
    unique = list(dict.fromkeys(labels))
    text = ", ".join(unique[:3])
    return text + (f" (+{len(unique) - 3} more)" if len(unique) > 3 else "")


def _forward(model, x, recorder: Recorder, *, inner_checks: bool) -> tuple[float, list[tuple[float, str]]]:
    """One forward; returns its time and the gaps ``(seconds, layers)`` in order (the last: last check to end)."""
    import torch

    from gpen_arch.ops import winograd

    real_check = getattr(winograd, "block_done", None)  # (None before the checks inside existed)
    if not inner_checks and real_check is not None:
        winograd.block_done = lambda: None
    recorder.checks, recorder.started, recorder.current = [], [], "input"
    try:
        with torch.no_grad(), model.between_blocks(recorder):
            start = time.perf_counter()
            model(x)
            end = time.perf_counter()
    finally:
        if real_check is not None:
            winograd.block_done = real_check
    gaps, previous = [], start
    for t, labels in recorder.checks:
        gaps.append((t - previous, _describe(labels)))
        previous = t
    gaps.append((end - previous, "to the end: " + _describe(recorder.started or [recorder.current + " ..."])))
    return end - start, gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, choices=(256, 512, 1024, 2048))
    parser.add_argument("--forwards", type=int, default=2, help="timed forwards (per variant with --compare)")
    parser.add_argument("--top", type=int, default=5, help="largest gaps to print per forward")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"),
                        help="bf16 runs without Winograd (fp32 only), so its convolutions run in one call each")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compare", action="store_true",
                        help="alternate forwards with and without the checks inside Winograd convolutions")
    args = parser.parse_args()

    import torch

    model = _load(args.size, args.threads, args.dtype)
    names = {id(m): name for name, m in model.named_modules()}
    recorder = Recorder(names)
    _wrap_layers(recorder)
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = x.to(next(model.parameters()).dtype)
    print(f"GPEN-{args.size}, CPU {args.dtype}, {torch.get_num_threads()} threads, plan {model.plan('cpu')}")
    seconds, _ = _forward(model, x, recorder, inner_checks=True)  # builds the derived weights
    print(f"warm-up forward {seconds:.2f} s (derived weights built)")
    variants = [True, False] if args.compare else [True]
    times: dict[bool, list[float]] = {v: [] for v in variants}
    for i in range(args.forwards):
        for inner in variants:
            seconds, gaps = _forward(model, x, recorder, inner_checks=inner)
            times[inner].append(seconds)
            load = os.getloadavg()
            worst = sorted(gaps, key=lambda g: -g[0])[:args.top]
            label = "with" if inner else "without"
            print(f"\nforward {i + 1} ({label} checks inside Winograd convs): {seconds:.2f} s, "
                  f"{len(gaps) - 1} checks, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
            for gap, where in worst:
                print(f"  {gap:6.2f} s  {100 * gap / seconds:5.1f}%  {where}")
    print()
    for inner in variants:
        label = "with" if inner else "without"
        print(f"{label:>7} checks inside Winograd convs: median {statistics.median(times[inner]):.2f} s, "
              f"best {min(times[inner]):.2f} s "
              f"({' '.join(f'{t:.2f}' for t in times[inner])})")


if __name__ == "__main__":
    main()
