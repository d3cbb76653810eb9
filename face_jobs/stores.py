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
``AWS_ENDPOINT_URL``), an instance or pod role, or the URI itself (``s3://KEY:SECRET@bucket/prefix``; the endpoint
in its query). Writing outputs into an object store is not supported (``refuse_store_output``): an object store has
no exclusive create or rename, so the writer's guarantees (no silent overwrite, one run per output folder) would not
hold.

A URI may carry credentials (``s3://KEY:SECRET@bucket/prefix``, or a query's ``access_key=...&secret_key=...``):
every message that names a URI names ``redacted(uri)`` (secrets replaced by ``***``), and a library's message about
it is passed through ``without_secrets`` first.

``pyarrow`` is imported only when a URI is used (it comes with ``ray[data]``; ``optional_deps.import_pyarrow_fs``
says how to install it).
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote, unquote_plus

from face_pipeline.errors import FileLayoutError, InvalidImageError, MissingDependencyError
from face_pipeline.image import IMAGE_SUFFIXES, PILLOW_ERRORS, check_budget, header_size, image_size
from face_pipeline.optional_deps import import_pyarrow_fs

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


#: query parameters whose value is a secret: a name containing one of these words (any case), or ``sig``
#: (pyarrow's ``access_key``, ``secret_key``, ``session_token``; Azure's SAS ``sig``; a signed URL's ``Signature``)
SECRET_WORDS = ("key", "secret", "token", "password", "passwd", "signature", "credential", "auth")
HIDDEN = "***"


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return lowered == "sig" or any(word in lowered for word in SECRET_WORDS)


def _split(uri: str) -> tuple[str, str | None, str, str]:
    """``(scheme://, userinfo or None, the rest up to the query, ?query#fragment)`` of ``uri``. The userinfo is what
    comes before the last ``@`` of the part without the query, when it has no ``/`` (a plain ``user:pass@host``) or
    holds a ``:`` (a secret with a ``/`` in it, which pyarrow refuses but a user may type): a ``@`` in a key name
    (``s3://bucket/me@home.jpg``) is not one."""
    match = _SCHEME.match(uri)
    head, rest = (match.group(0), uri[match.end():]) if match else ("", uri)
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    body, tail = rest[:cut], rest[cut:]
    at = body.rfind("@")
    if match and at >= 0 and ("/" not in body[:at] or ":" in body[:at]):
        return head, body[:at], body[at + 1:], tail
    return head, None, body, tail


def redacted(uri: str | Path) -> str:
    """``uri`` as every message shows it: its userinfo (``KEY:SECRET@``) and the values of its secret query
    parameters (``SECRET_WORDS``: ``access_key=``, ``secret_key=``, ``session_token=``, ...) replaced by ``***``;
    the rest (bucket, path, endpoint, region) as given. A local path is returned as it is."""
    text = str(uri)
    if not is_uri(text):
        return text
    head, userinfo, body, tail = _split(text)
    query, _, fragment = tail[1:].partition("#") if tail.startswith("?") else ("", "", tail[1:])
    shown = head + (f"{HIDDEN}@" if userinfo is not None else "") + body
    if tail.startswith("?"):
        shown += "?" + "&".join(map(_hidden_pair, query.split("&")))
    if fragment or "#" in tail:  # a fragment may hold a token
        shown += f"#{HIDDEN}"
    return shown


def _hidden_pair(pair: str) -> str:
    """One ``name=value`` of a query as shown: the value hidden for a secret name; a bare value (a token) hidden."""
    name, sep, _ = pair.partition("=")
    if not sep:
        return HIDDEN if pair else pair
    return f"{name}={HIDDEN}" if _secret_name(unquote(name)) else pair


def secrets_of(uri: str) -> list[str]:
    """The secret parts of ``uri`` (its userinfo, its password alone, its secret query values, each also
    percent-decoded), longest first: what ``without_secrets`` removes from a text."""
    if not is_uri(uri):
        return []
    _, userinfo, _, tail = _split(uri)
    found: list[str] = []
    if userinfo:
        found += [userinfo, *userinfo.split(":", 1)]
    query, _, fragment = tail[1:].partition("#") if tail.startswith("?") else ("", "", tail[1:])
    for pair in query.split("&") if query else []:
        name, sep, value = pair.partition("=")
        if not sep:  # a bare token: ?TOKEN
            found.append(name)
        elif _secret_name(unquote(name)):
            found.append(value)
    found.append(fragment)
    found += [unquote(value) for value in found] + [unquote_plus(value) for value in found]
    return sorted({value for value in found if value}, key=len, reverse=True)


def without_secrets(text: str, *uris: str) -> str:
    """``text`` (a library's message, which may quote a URI whole) with each of ``uris`` shown ``redacted`` and
    any secret part of them that is left replaced by ``***`` (where it stands alone: not inside a longer word, so
    a container name ``c`` in ``abfs://c@account`` leaves the other c's of the text alone)."""
    for uri in uris:
        if not is_uri(uri):
            continue
        text = text.replace(uri, redacted(uri))
        for secret in secrets_of(uri):
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", HIDDEN, text)
    return text


def _library_error(exc: BaseException, uri: str) -> str:
    """A pyarrow error about ``uri`` on one line, without the URI's secrets."""
    return without_secrets(" ".join(str(exc).split()), uri)


@functools.lru_cache(maxsize=16)
def filesystem(uri: str):
    """``(pyarrow filesystem, path in it)`` of ``uri``, made once per process. ``FileLayoutError`` when pyarrow
    does not know the scheme or cannot make the filesystem (a library it needs missing, a bad query);
    ``MissingDependencyError`` with the install line when pyarrow is not installed. The messages show the URI
    ``redacted`` and leave pyarrow's error out of the chain (it may quote the URI with its secrets)."""
    fs = import_pyarrow_fs(needed_for=f"reading {redacted(uri)}")
    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # ArrowInvalid is a ValueError; a missing library an OSError
        cause = _library_error(exc, uri)
    raise FileLayoutError(f"{redacted(uri)} cannot be read: {cause} (object stores are read with pyarrow.fs: "
                          f"s3://, gs://, abfs://, hdfs://)")


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0]


@dataclass(frozen=True)
class StoreObject:
    """One object of an object store: the URI given on the command line (its filesystem) and the object's path
    in that filesystem (``bucket/prefix/name.jpg``). Printed as ``scheme://path`` (the query left out)."""

    root: str = field(repr=False)  # may hold credentials: never shown (``redacted``)
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
        except (FileLayoutError, MissingDependencyError) as exc:
            raise InvalidImageError(f"{self} could not be read: {exc}") from exc
        try:
            with fs.open_input_stream(self.path) as stream:
                return stream.read() if limit is None else stream.read(limit)
        except _READ_ERRORS as exc:
            cause = describe_os_error(exc) if isinstance(exc, OSError) and exc.errno else " ".join(str(exc).split())
            cause = without_secrets(cause, self.root)
        raise InvalidImageError(f"{self} could not be read: {cause}")  # pyarrow's error may quote the secrets


Source = Path | StoreObject


def list_store_images(uri: str) -> list[tuple[StoreObject, Path]]:
    """The images of ``uri`` as ``(object, name under the output folder)``: the object ``uri`` names, or for a
    folder (a prefix) its images by name, then those of each direct subfolder by name, as ``inputs.collect_inputs``
    orders a local folder's. ``FileLayoutError`` when nothing is there or the store cannot be listed."""
    if _scheme(uri).lower() == "file":  # a local folder: the local checks (output inside an input...) apply
        raise FileLayoutError(f"{redacted(uri)}: give a local file or folder as its path, without file://")
    store, base = filesystem(uri)
    pafs = import_pyarrow_fs(needed_for=f"reading {redacted(uri)}")
    base = base.rstrip("/")
    try:
        info = store.get_file_info(base)
        if info.type == pafs.FileType.File:
            return [(StoreObject(uri, base), Path(PurePosixPath(base).name))]
        if info.type != pafs.FileType.Directory:
            raise FileLayoutError(f"input not found: {redacted(uri)}")
        found = store.get_file_info(pafs.FileSelector(base, recursive=True))
    except OSError as exc:
        cause = _library_error(exc, uri)
        raise FileLayoutError(f"{redacted(uri)} could not be listed: {cause} (check the credentials and the "
                              f"endpoint: AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)") from None
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
        raise FileLayoutError(f"--output {redacted(str(output))}: outputs are written to a local or mounted folder "
                              f"only (an object store has no exclusive create, so an existing object could be "
                              f"replaced and two runs could write at once); write to a folder, then copy it up (e.g. "
                              f"aws s3 sync)")


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
