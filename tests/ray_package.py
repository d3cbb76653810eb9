"""What Ray would upload for a runtime_env, found with Ray's own packaging walk (``_dir_travel`` with its
``excludes`` patterns, ``.gitignore`` and ``.rayignore``, and for a ``working_dir`` its default excludes), without
starting Ray: each shipped entry's files, their sizes, and the zip Ray would build (``create_package``). Used by
tests/test_ray_engine.py and benchmarks/ray_package_size.py. These are Ray's private helpers (Ray 2.60): if they move,
this module is the one place to follow them.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

#: Ray's packaging logs each package it makes at INFO: quiet here
_QUIET = logging.getLogger(__name__)
_QUIET.setLevel(logging.WARNING)


def _entries(runtime_env: dict) -> list[tuple[Path, list[str], bool]]:
    """(path, excludes, include_parent_dir) of every local entry Ray packs, as its uploaders do: a working_dir with
    Ray's default excludes and the user's, each py_modules entry with the user's."""
    from ray._private import ray_constants

    user = list(runtime_env.get("excludes") or [])
    entries = []
    if runtime_env.get("working_dir"):
        entries.append((Path(runtime_env["working_dir"]), ray_constants.get_runtime_env_default_excludes() + user,
                        False))
    for module in runtime_env.get("py_modules") or []:
        entries.append((Path(module), user if Path(module).is_dir() else [], Path(module).is_dir()))
    return entries


def packed_files(runtime_env: dict) -> dict[str, int]:
    """Every file Ray would pack for ``runtime_env``: its name in the package (``face_jobs/run.py``) -> its size in
    bytes (from ``stat``: nothing is read)."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    found: dict[str, int] = {}
    for root, excludes, with_parent in _entries(runtime_env):
        if root.is_file():
            found[root.name] = root.stat().st_size
            continue
        prefix = f"{root.name}/" if with_parent else ""

        def handler(path: Path, root: Path = root, prefix: str = prefix) -> None:
            if path.is_file():
                found[prefix + path.relative_to(root).as_posix()] = path.stat().st_size

        _dir_travel(root, [_get_excludes(root, excludes)], handler, include_gitignore=True, logger=_QUIET)
    return found


def zipped_bytes(runtime_env: dict) -> int:
    """The bytes of the zips Ray would upload for ``runtime_env`` (built here, in a temporary folder, with Ray's
    ``create_package``, and removed)."""
    from ray._private.runtime_env.packaging import create_package

    total = 0
    with tempfile.TemporaryDirectory(prefix="gpen-ray-package-") as folder:
        for index, (root, excludes, with_parent) in enumerate(_entries(runtime_env)):
            target = Path(folder) / f"{index}.zip"
            create_package(str(root), target, include_gitignore=True, include_parent_dir=with_parent,
                           excludes=excludes, logger=_QUIET)
            total += target.stat().st_size
    return total
