"""Time and peak memory of reading the hostile weight files of issue 22, for this checkout and, with --before, another
one (e.g. the code before the budgets), each read in a fresh Python with an address-space limit.

    flock /work/heavy.lock python benchmarks/bench_hostile_weights.py --before /work/main

Each file is built in a temporary folder (tests/hostile_files.py) and read with ``read_state_dict`` (what loading
does) and with the model list's look (``peek_torch_file`` / ``onnx_not_gpen_reason``). Reported per file and
checkout: the outcome (the exception's type and the start of its message, "timeout", or for the list's look at an
ONNX file whether it is offered), the wall time, and the peak resident memory the read added over the Python after
its imports (``ru_maxrss``). --limit-gib caps each child's address space (default 12 GiB) so a bomb cannot take the
machine down; a bomb that runs past it reports MemoryError.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

import hostile_files  # noqa: E402 - after the sys.path line above

_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import onnx
from gpen_arch import read_state_dict
from gpen_arch.formats.onnx_import import onnx_not_gpen_reason
from gpen_arch.formats.checkpoint_file import peek_torch_file
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    if {mode!r} == "load":
        read_state_dict({path!r})
        outcome = "read"
    elif {path!r}.endswith(".onnx"):
        reason = onnx_not_gpen_reason({path!r})
        outcome = "left out: " + reason if reason else "offered"
    else:
        peek_torch_file({path!r})
        outcome = "looked into"
except BaseException as exc:
    outcome = type(exc).__name__ + ": " + str(exc)[:110]
print(json.dumps({{"outcome": outcome, "seconds": time.perf_counter() - start,
                  "extra_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024}}))
"""


def measure(root: Path, path: Path, mode: str, *, timeout: float, limit_gib: float) -> dict:
    def limit():
        size = int(limit_gib * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    try:
        done = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(root), path=str(path), mode=mode)],
                              capture_output=True, text=True, timeout=timeout, preexec_fn=limit, check=False)
    except subprocess.TimeoutExpired:
        return {"outcome": f"timeout (still running after {timeout:.0f} s, killed)", "seconds": timeout,
                "extra_mib": float("nan")}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"outcome": f"crashed (exit {done.returncode}): {done.stderr.strip()[-200:]}",
                "seconds": float("nan"), "extra_mib": float("nan")}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="another checkout to measure the same files with")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a read is killed")
    parser.add_argument("--limit-gib", type=float, default=12.0, help="address-space limit of each read")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [
            ("bytearray(5 GiB) .pth", hostile_files.bytearray_pth(folder / "bytearray.pth")),
            ("zip bomb .pth (4.5 GiB record)", hostile_files.zip_bomb_pth(folder / "zip_bomb.pth")),
            ("ONNX, 2,000 encoder blocks", hostile_files.many_encoder_blocks_onnx(folder / "b2k.onnx", 2000)),
            ("ONNX, 4,000 encoder blocks", hostile_files.many_encoder_blocks_onnx(folder / "b4k.onnx", 4000)),
            ("ONNX, 100,000 encoder blocks", hostile_files.many_encoder_blocks_onnx(folder / "b100k.onnx")),
            ("ONNX folding bomb, 1.9 GB folded", hostile_files.folding_bomb_onnx(folder / "fold2.onnx", copies=24,
                                                                                 rows=16384)),
            ("ONNX folding bomb, 20 GB folded", hostile_files.folding_bomb_onnx(folder / "fold.onnx")),
        ]
        roots = [("after", REPO_ROOT)] + ([("before", args.before.resolve())] if args.before else [])
        print(f"{'file':34} {'bytes':>10} {'checkout':8} {'mode':5} {'seconds':>8} {'+MiB':>8}  outcome")
        for label, path in files:
            for name, root in roots:
                for mode in ("load", "list"):
                    if name == "before" and "20 GB" in label:
                        print(f"{label:34} {path.stat().st_size:>10,} {name:8} {mode:5} {'-':>8} {'-':>8}  not run "
                              f"(would allocate about 20 GB)")
                        continue
                    found = measure(root, path, mode, timeout=args.timeout, limit_gib=args.limit_gib)
                    print(f"{label:34} {path.stat().st_size:>10,} {name:8} {mode:5} {found['seconds']:>8.2f} "
                          f"{found['extra_mib']:>8.0f}  {found['outcome']}", flush=True)


if __name__ == "__main__":
    main()
