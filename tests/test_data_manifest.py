"""tests/data is what its MANIFEST says, stays small, and stays out of the Registry package."""

from __future__ import annotations

import hashlib
import re

from conftest import DATA, REPO_ROOT

MAX_FILE_BYTES = 4 * 2**20
MAX_TOTAL_BYTES = 19 * 2**20  # about 18 MB, the ONNX fixtures in onnx/ and the 3 MB official pipeline vector included


def manifest_rows() -> dict[str, tuple[int, str]]:
    """file -> (bytes, sha256) from the table of tests/data/MANIFEST.md."""
    rows = {}
    for line in (DATA / "MANIFEST.md").read_text().splitlines():
        match = re.match(r"\| `([^`]+)` \| (\d+) \| ([0-9a-f]{64}) \|", line)
        if match:
            rows[match.group(1)] = (int(match.group(2)), match.group(3))
    return rows


def own_manifest(relative: str) -> bool:
    """Files in a subfolder with its own MANIFEST.md (onnx/) are listed there, not here."""
    parts = relative.split("/")
    return any((DATA.joinpath(*parts[:i]) / "MANIFEST.md").is_file() for i in range(1, len(parts)))


def test_every_file_is_listed_with_its_size_and_sha256():
    files = {p.relative_to(DATA).as_posix(): p for p in DATA.rglob("*") if p.is_file()}
    ours = {name: path for name, path in files.items() if not name.endswith("MANIFEST.md") and not own_manifest(name)}
    rows = manifest_rows()
    assert len(rows) >= 18 and sorted(ours) == sorted(rows)
    for name, (size, sha256) in rows.items():
        data = ours[name].read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha256, name


def test_the_folder_stays_small():
    sizes = {p.relative_to(DATA).as_posix(): p.stat().st_size for p in DATA.rglob("*") if p.is_file()}
    assert max(sizes.values()) <= MAX_FILE_BYTES, max(sizes, key=sizes.get)
    assert sum(sizes.values()) <= MAX_TOTAL_BYTES, sum(sizes.values())


def test_the_registry_package_leaves_the_test_data_out():
    """comfy-cli packs the git-tracked files minus the .comfyignore patterns (gitignore syntax)."""
    patterns = [line.strip() for line in (REPO_ROOT / ".comfyignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert "/tests/data/" in patterns
    assert not any(p.lstrip("/").split("/")[0] in {"gpen_arch", "face_pipeline", "nodes", "cli.py"} for p in patterns)
