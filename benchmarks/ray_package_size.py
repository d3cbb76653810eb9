"""The bytes ``--engine ray`` ships to its workers, before and after issue 27 item 7, for the tree as it is and with
600 MB of photos dropped beside cli.py.

    python benchmarks/ray_package_size.py
    python benchmarks/ray_package_size.py --photos-mb 600 --keep   (the copy with the photos is left for a look)

"before": the pack's folder as Ray's ``working_dir`` less a list of excludes (what the engine shipped until then);
"after": ``face_jobs.engines.ray_cluster.code_runtime_env``, the pack's code named one by one as ``py_modules``. Each
is measured with Ray's own packaging walk and zip (tests/ray_package.py), without starting Ray: the files packed,
their bytes, and the zip Ray would upload (built only below 64 MiB of files; Ray refuses 512 MiB). The photos are
sparse files in a copy of the tree (the git-tracked and untracked, not ignored files), so they take no disk.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from ray_package import packed_files, zipped_bytes  # noqa: E402

from face_jobs.engines.ray_cluster import code_runtime_env  # noqa: E402

#: the excludes the engine gave Ray with the pack's folder as its working_dir, before issue 27 item 7
BEFORE_EXCLUDES = [".git", ".ci", "tests", "benchmarks", "example_workflows", "docs", "models", "__pycache__", "*.pth",
                   "*.safetensors"]
ZIP_LIMIT = 64 * 1024 * 1024


def before(root: Path) -> dict:
    return {"working_dir": str(root), "excludes": list(BEFORE_EXCLUDES)}


def measure(label: str, runtime_env: dict) -> None:
    files = packed_files(runtime_env)
    size = sum(files.values())
    zipped = f"{zipped_bytes(runtime_env):,} bytes zipped" if size < ZIP_LIMIT else "zip not built"
    print(f"{label:<34} {len(files):5d} files {size:>14,} bytes   {zipped}")


def copy_tree(root: Path, target: Path) -> None:
    """The files git tracks or would track (tracked, and untracked but not ignored) of ``root``, copied to
    ``target``."""
    names = subprocess.run(["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, names):
        source = root / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos-mb", type=int, default=600, help="MB of photos dropped beside cli.py (sparse)")
    parser.add_argument("--keep", action="store_true", help="leave the copy of the tree and print where it is")
    args = parser.parse_args()
    print(f"the tree as it is ({REPO_ROOT}):")
    measure("  before (working_dir + excludes)", before(REPO_ROOT))
    measure("  after (py_modules)", code_runtime_env(REPO_ROOT))
    folder = Path(tempfile.mkdtemp(prefix="gpen-ray-size-"))
    try:
        copy_tree(REPO_ROOT, folder)
        photos = folder / "photos"
        photos.mkdir()
        each = 6 * 1024 * 1024
        for index in range(-(-args.photos_mb * 1024 * 1024 // each)):
            with open(photos / f"IMG_{index:04d}.jpg", "wb") as file:
                file.truncate(each)  # sparse: no disk used
        print(f"with {args.photos_mb} MB of photos beside cli.py (a copy: {folder}):")
        measure("  before (working_dir + excludes)", before(folder))
        measure("  after (py_modules)", code_runtime_env(folder))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
