"""Inputs in an object store (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``: every URI ``pyarrow.fs`` knows).

A URI given as an input is listed like a folder (its images and those of its direct "subfolders", i.e. key prefixes
one level down) or read as one image. Each image is a ``StoreObject``: the URI that was given (which makes the
filesystem, with its query: ``?endpoint_override=...&scheme=http&region=...``) and the object's path in that
filesystem. Whoever processes an image reads the object itself (``staged``: the object is copied to a temporary
local file under its own name, and the per-image function runs on that file), so a Ray driver ships names, never
image bytes. ``source_size`` reads an image's size from the first bytes of the object (one ranged read) and falls
back to reading all of it.

Credentials and endpoints come from where ``pyarrow.fs`` takes them: for S3 the standard AWS variables and files
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``), an instance or pod role, or the URI's query. Writing outputs into an object store is not
supported (``refuse_store_output``): an object store has no exclusive create or rename, so the writer's guarantees
(no silent overwrite, one run per output folder) would not hold.

``pyarrow`` is imported only when a URI is used (it comes with ``ray[data]``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar

from face_pipeline.errors import FileLayoutError, InvalidImageError
from face_pipeline.image import IMAGE_SUFFIXES, PILLOW_ERRORS, check_budget, header_size, image_size

from .writer import describe_os_error

if TYPE_CHECKING:
    from .plan import PlannedOutput

T = TypeVar("T")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: bytes read to find an image's size from its header (the EXIF of a JPEG is in its first 64 KiB)
HEADER_BYTES = 1 << 16
_READ_ERRORS = (OSError, ValueError)  # pyarrow raises OSError (and its ArrowInvalid, a ValueError) on failed reads


def is_uri(value: str | Path) -> bool:
    """Whether ``value`` is a URI with a scheme (``s3://bucket/key``) rather than a local path."""
    return isinstance(value, str) and bool(_SCHEME.match(value))


def _no_pyarrow(uri: str, exc: ImportError) -> FileLayoutError:
    return FileLayoutError(f"{uri}: reading an object store needs pyarrow, which is not installed ({exc}); install "
                           f'it with: pip install "ray[data]" (or pip install pyarrow)')


@functools.lru_cache(maxsize=16)
def filesystem(uri: str):
    """``(pyarrow filesystem, path in it)`` of ``uri``, made once per process. ``FileLayoutError`` when pyarrow
    does not know the scheme or cannot make the filesystem (a library it needs missing, a bad query)."""
    try:
        from pyarrow import fs
    except ImportError as exc:
        raise _no_pyarrow(uri, exc) from exc
    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # ArrowInvalid is a ValueError; a missing library an OSError
        raise FileLayoutError(f"{uri} cannot be read: {' '.join(str(exc).split())} (object stores are read with "
                              f"pyarrow.fs: s3://, gs://, abfs://, hdfs://)") from exc


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0]


@dataclass(frozen=True)
class StoreObject:
    """One object of an object store: the URI given on the command line (its filesystem) and the object's path
    in that filesystem (``bucket/prefix/name.jpg``). Printed as ``scheme://path`` (the query left out)."""

    root: str
    path: str

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix

    def __str__(self) -> str:
        return f"{_scheme(self.root)}://{self.path}"

    def read_bytes(self, limit: int | None = None) -> bytes:
        """The object's bytes (at most ``limit``). Raises ``InvalidImageError`` naming the object and the cause (a
        worker without the credentials or the library the store needs gets it too: one input reported, not a crash)."""
        try:
            fs, _ = filesystem(self.root)
        except FileLayoutError as exc:
            raise InvalidImageError(f"{self} could not be read: {exc}") from exc
        try:
            with fs.open_input_stream(self.path) as stream:
                return stream.read() if limit is None else stream.read(limit)
        except _READ_ERRORS as exc:
            cause = describe_os_error(exc) if isinstance(exc, OSError) and exc.errno else " ".join(str(exc).split())
            raise InvalidImageError(f"{self} could not be read: {cause}") from exc


Source = Path | StoreObject


def list_store_images(uri: str) -> list[tuple[StoreObject, Path]]:
    """The images of ``uri`` as ``(object, name under the output folder)``: the object ``uri`` names, or for a
    folder (a prefix) its images by name, then those of each direct subfolder by name, as ``inputs.collect_inputs``
    orders a local folder's. ``FileLayoutError`` when nothing is there or the store cannot be listed."""
    if _scheme(uri).lower() == "file":  # a local folder: the local checks (output inside an input...) apply
        raise FileLayoutError(f"{uri}: give a local file or folder as its path, without file://")
    from pyarrow import fs as pafs

    store, base = filesystem(uri)
    base = base.rstrip("/")
    try:
        info = store.get_file_info(base)
        if info.type == pafs.FileType.File:
            return [(StoreObject(uri, base), Path(PurePosixPath(base).name))]
        if info.type != pafs.FileType.Directory:
            raise FileLayoutError(f"input not found: {uri}")
        found = store.get_file_info(pafs.FileSelector(base, recursive=True))
    except OSError as exc:
        raise FileLayoutError(f"{uri} could not be listed: {' '.join(str(exc).split())} (check the credentials "
                              f"and the endpoint: AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)") from exc
    top: list[tuple[str, str]] = []
    nested: list[tuple[str, str, str]] = []
    for entry in found:
        parts = PurePosixPath(entry.path).relative_to(base).parts
        if entry.type != pafs.FileType.File or PurePosixPath(entry.path).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if len(parts) == 1:
            top.append((parts[0], entry.path))
        elif len(parts) == 2:
            nested.append((parts[0], parts[1], entry.path))
    images = [(StoreObject(uri, path), Path(name)) for name, path in sorted(top)]
    images += [(StoreObject(uri, path), Path(sub) / name) for sub, name, path in sorted(nested)]
    return images


def refuse_store_output(output: str | Path) -> None:
    """``FileLayoutError`` for an output in an object store (see the module doc)."""
    if is_uri(str(output)):
        raise FileLayoutError(f"--output {output}: outputs are written to a local or mounted folder only (an object "
                              f"store has no exclusive create, so an existing object could be replaced and two runs "
                              f"could write at once); write to a folder, then copy it up (e.g. aws s3 sync)")


def source_size(source: Source) -> tuple[int, int]:
    """(width, height) of an input as ``image.read_image`` returns it: ``image_size`` for a local file; for an object,
    from the header in its first ``HEADER_BYTES`` (one read), else from all of it. ``InvalidImageError`` for an
    object that cannot be read, is not an image or has several frames or pages (``image.refuse_frames``),
    ``ImageTooLargeError`` for one beyond the budget (``image.check_budget``)."""
    if not isinstance(source, StoreObject):
        return image_size(source)
    head = source.read_bytes(HEADER_BYTES)
    try:
        width, height = header_size(io.BytesIO(head))
    except InvalidImageError:  # beyond the budget, or several frames or pages (refuse_frames)
        raise
    except PILLOW_ERRORS:
        with _local_copy(source) as path:
            return image_size(path)
    check_budget(width, height)
    return width, height


@contextlib.contextmanager
def _local_copy(source: StoreObject) -> Iterator[Path]:
    """``with _local_copy(obj) as path:`` the object's bytes in a temporary folder, under the object's name (so the
    local readers' messages name it as they would a local file); removed afterwards."""
    data = source.read_bytes()
    folder = tempfile.mkdtemp(prefix="gpen-store-")
    try:
        path = Path(folder) / (source.name or "object")
        path.write_bytes(data)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def staged(process: Callable[[PlannedOutput], T]) -> Callable[[PlannedOutput], T]:
    """``process`` for items whose source may be a ``StoreObject``: the object is read here (by whoever runs
    ``process``: a Ray worker reads it itself) into a temporary local file, and ``process`` gets the item with that
    file as its source. A local source is passed through. Failing to read the object is ``InvalidImageError``."""

    @functools.wraps(process)
    def run(item: PlannedOutput) -> T:
        if not isinstance(item.source, StoreObject):
            return process(item)
        with _local_copy(item.source) as path:
            return process(replace(item, source=path))

    return run
