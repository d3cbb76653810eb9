"""Turning whatever image a caller has into the pipeline's convention, and back; image files in and out.

The pipeline works on ``[B, 3, H, W]`` float32 RGB tensors in 0..1. ``to_rgb_float`` accepts numpy arrays or torch
tensors laid out ``HW`` (gray), ``HWC`` or ``BHWC`` (channels last, as ComfyUI and OpenCV hold them; or channels first
with ``channels_last=False``), with 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels; values uint8 (/255),
uint16 (/65535) or float in 0..1. Alpha is dropped. Float values a little outside 0..1 (up to ``FLOAT_TOLERANCE``;
a host that takes images from other programs' resamplers passes ``OVERSHOOT_TOLERANCE``) are clamped; anything else
(NaN/inf, 0..255 floats, -1..1, empty or oversized images, other dtypes) is an ``InvalidImageError`` that says what
was found and which convention it looks like.

Files: ``read_image`` decodes with OpenCV from bytes (``np.fromfile``), so paths with any characters work on every
OS; 8- and 16-bit files are read, the EXIF orientation applied (for every format, from Pillow's reading of the tags),
and what the file carries is kept beside the pixels: its alpha channel (unless fully opaque), its EXIF (orientation
reset, thumbnail dropped) and ICC profile. ``encode_image`` encodes 8-bit files with Pillow (16-bit
in, 8-bit out), rounded, JPEG at quality 95, with the alpha (PNG, WEBP, TIFF), EXIF and ICC profile (JPEG, PNG, WEBP,
TIFF) handed back; what a format cannot hold is a warning. Writing the bytes to a file is the batch jobs' (the
atomic writer: ``face_jobs.writer``, whose ``save_image`` encodes and writes).

Still images only: an animated image (WEBP, APNG, GIF) or a multi-page TIFF is refused from its header
(``InvalidImageError`` naming the frame or page count, before any decoding) rather than flattened to its first frame;
its frames are restored after extracting them (``--video-frames``). A TIFF's reduced-resolution pages (previews) and
the preview pictures a camera JPEG (MPO) carries do not count. Colour: the ICC profile written always describes the
RGB data written. A file in another colour space (CMYK or YCCK JPEG, LAB TIFF) with an embedded profile is
converted to sRGB through that profile (Pillow's ``ImageCms``, perceptual intent) and written without a profile
(untagged data is sRGB); without a profile it is converted plainly (OpenCV's decoding) and written without one; a
gray profile, or any non-RGB profile that cannot be applied, is dropped (the pixels converted plainly).
"""

from __future__ import annotations

import io
import logging
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .budgets import MAX_PIXELS, MAX_SIDE
from .errors import ImageTooLargeError, InvalidImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: float inputs may overshoot 0..1 by this much (resampling ringing) and are clamped; beyond it they are rejected
FLOAT_TOLERANCE = 0.05
#: the overshoot a host accepts (and clamps) from other programs' images (ComfyUI's IMAGE and MASK from upstream
#: nodes): bicubic and Lanczos upscales of real photos ring to about -0.2..1.2, while an image in another convention
#: goes far beyond: 0..255 above 1.5 (unless it is black), -1..1 below -0.5 (unless it is very bright)
OVERSHOOT_TOLERANCE = 0.5
JPEG_QUALITY = 95
#: formats that hold an alpha channel, and those that hold EXIF and an ICC profile (as Pillow writes them)
ALPHA_SUFFIXES = (".png", ".webp", ".tif", ".tiff")
METADATA_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
            ".tiff": "TIFF"}
# WEBP: lossless, the colour under transparent pixels kept; TIFF uncompressed (libtiff's compressing writer cannot
# write the EXIF sub-IFDs)
_ENCODER_OPTIONS = {"JPEG": {"quality": JPEG_QUALITY}, "PNG": {"compress_level": 1},
                    "WEBP": {"lossless": True, "exact": True}, "BMP": {}, "TIFF": {}}

_INTEGER_MAX = {torch.uint8: 255.0, torch.uint16: 65535.0}


def _as_tensor(image) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16:  # torch's uint16 is limited; convert here
            return torch.from_numpy(image.astype(np.float32) / 65535.0)
        if image.dtype not in (np.uint8, np.float16, np.float32, np.float64):
            raise InvalidImageError(f"unsupported image dtype {image.dtype}: expected uint8, uint16 or float in 0..1")
        image = torch.from_numpy(np.ascontiguousarray(image))
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.uint8:
            return image  # converted by to_rgb_float once laid out: one float copy of a big frame, not three
        if image.dtype in _INTEGER_MAX:
            return image.float() / _INTEGER_MAX[image.dtype]
        if not image.is_floating_point():
            raise InvalidImageError(f"unsupported image dtype {image.dtype}: expected uint8, uint16 or float in 0..1")
        return image
    raise InvalidImageError(f"expected an image as a numpy array or torch tensor, got {type(image).__name__}")


def to_rgb_float(image, *, channels_last: bool = True, tolerance: float = FLOAT_TOLERANCE,
                 what: str = "float images") -> torch.Tensor:
    """Convert ``image`` (see the module doc) to ``[B, 3, H, W]`` float32 RGB in 0..1, on the tensor's device (numpy
    goes to the CPU). ``channels_last`` says how 3-D/4-D input is laid out: ``[B, H, W, C]`` (default) or
    ``[B, C, H, W]``; a 2-D input is one gray image. Float values up to ``tolerance`` outside 0..1 are clamped;
    errors name the input as ``what``."""
    was_integer = (isinstance(image, np.ndarray) and image.dtype in (np.uint8, np.uint16)) or (
        isinstance(image, torch.Tensor) and image.dtype in _INTEGER_MAX)
    shape = list(image.shape) if hasattr(image, "shape") else None
    tensor = _as_tensor(image)
    if tensor.dim() == 2:
        tensor = tensor[None, :, :, None] if channels_last else tensor[None, None]
    elif tensor.dim() == 3:
        tensor = tensor[None]
    elif tensor.dim() != 4:
        raise InvalidImageError(f"expected an image of 2, 3 or 4 dimensions ([B,] H, W[, C]), got shape {shape}")
    if channels_last:
        tensor = tensor.permute(0, 3, 1, 2)  # [B, H, W, C] -> [B, C, H, W]
    b, c, h, w = tensor.shape
    if b == 0 or h == 0 or w == 0:
        raise InvalidImageError(f"the image is empty: shape {shape}")
    if c not in (1, 2, 3, 4):
        layout = "[B, H, W, C]" if channels_last else "[B, C, H, W]"
        raise InvalidImageError(f"expected 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels in {layout}, got "
                                f"{c} (shape {shape})")
    check_budget(w, h)
    tensor = tensor[:, :1].expand(b, 3, h, w) if c in (1, 2) else tensor[:, :3]  # gray -> RGB; alpha dropped
    if tensor.dtype == torch.uint8:  # laid out in 8 bits, then one float32 copy scaled in place
        return tensor.contiguous().float().div_(255.0)
    tensor = tensor.float()
    if not was_integer:
        check_unit_range(tensor, tolerance=tolerance, what=what)
        tensor = tensor.clamp(0, 1)
    return tensor.contiguous()


def check_budget(width: int, height: int, name: str | None = None) -> None:
    """``ImageTooLargeError`` for an image of ``width`` x ``height`` beyond the budget (``MAX_SIDE`` per side,
    ``MAX_PIXELS`` in all); ``name`` (a file name) is put in the message."""
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageTooLargeError(f"{f'{name}: ' if name else ''}image of {width}x{height} {_BEYOND_BUDGET}")


_BEYOND_BUDGET = (f"is larger than the supported {MAX_SIDE} pixels per side and {MAX_PIXELS // 1_000_000} "
                  f"megapixels in all; downscale it first")


def apply_budget_to_pillow() -> None:
    """Make Pillow's own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, a process-wide setting) this
    pack's budget, and silence its warning between the two (the header check refuses those images first). For a
    process that owns Pillow (the command line and its Ray workers), called once at start; a host application
    (ComfyUI) keeps its own setting and the budget still holds there, from the header."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def check_unit_range(images: torch.Tensor, *, tolerance: float = FLOAT_TOLERANCE, what: str = "float images") -> None:
    """``InvalidImageError`` unless every value of the float tensor ``images`` is finite and in 0..1, give or take
    ``tolerance`` (the one check of "values in 0..1" for the whole pack; callers clamp what they keep). The message
    names ``what`` and the convention the values look like (0..255, -1..1)."""
    # one pass and one host sync; NaN and inf show up in the extremes
    low, high = torch.stack(torch.aminmax(images.float())).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        subject = "the images contain" if what == "float images" else f"{what} holds"
        raise InvalidImageError(f"{subject} NaN or infinite values")
    if low < -tolerance or high > 1 + tolerance:
        raise InvalidImageError(f"{what} must hold values in 0..1; found {low:.3g}..{high:.3g} "
                                f"({_convention(low, high)})")


def _convention(low: float, high: float) -> str:
    """What values outside 0..1 look like, and what to do about them."""
    limit = OVERSHOOT_TOLERANCE
    if high > 1 + limit and low < -limit:
        return "neither 0..1, 0..255 nor -1..1: normalise it to 0..1 first"
    if high > 1 + limit:
        return "this looks like 0..255: divide by 255"
    if low < -limit:
        return "this looks like -1..1: convert with x * 0.5 + 0.5"
    return "a little outside 0..1, as resampling overshoot gives: clamp it to 0..1"


# ------------------------------------------------------------------------------------------------------ image files
@dataclass(frozen=True)
class ImageFile:
    """An image file as read: its pixels and what else it carries, to be written back with the result."""

    pixels: torch.Tensor  # [1, 3, H, W] float32 RGB 0..1, EXIF orientation applied
    alpha: torch.Tensor | None = None  # [1, 1, H, W] float32 0..1; None: the image is opaque
    exif: bytes | None = None  # EXIF to write back: orientation reset to 1, thumbnail and file-layout tags dropped
    icc_profile: bytes | None = None


#: EXIF orientation -> the numpy view that shows the image upright (checked against Pillow's exif_transpose)
_ORIENTATIONS = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, -1)[::-1], 8: lambda a: np.rot90(a, 1),
}
#: the EXIF tags kept from the first IFD (descriptive ones; the file-layout tags of a TIFF are not)
_KEPT_TAGS = (0x010E, 0x010F, 0x0110, 0x0112, 0x011A, 0x011B, 0x0128, 0x0131, 0x0132, 0x013B, 0x8298)
_SUB_IFDS = (0x8769, 0x8825)  # Exif and GPS
#: what Pillow's parsers raise on a damaged or hostile file (its TIFF and EXIF readers index, unpack and divide
#: whatever the file says): a file they cannot read is an image without metadata, or one read by OpenCV instead
PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError,
                 ZeroDivisionError, OverflowError)


def _metadata(path: Path) -> tuple[int, bytes | None, bytes | None]:
    """(EXIF orientation, EXIF to write back, ICC profile) of a file, read with Pillow; (1, None, None) for a file
    Pillow cannot open."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            icc = image.info.get("icc_profile") or None
            exif = _exif(image)
            orientation = int(exif.get(0x0112, 1) or 1)
            kept = Image.Exif()
            for tag in _KEPT_TAGS:
                if tag in exif:
                    kept[tag] = exif[tag]
            for tag in _SUB_IFDS:
                if tag in exif:
                    kept.get_ifd(tag).update(exif.get_ifd(tag))
    except (*PILLOW_ERRORS, Image.DecompressionBombError) as exc:
        logger.debug("%s: no metadata read (%s)", path.name, exc)
        return 1, None, None
    if 0x0112 in kept:
        kept[0x0112] = 1  # the pixels are turned upright on reading
    return orientation, (kept.tobytes() if len(kept) else None), icc


def _png_exif_after_pixels(fp) -> bool:
    """Whether the PNG file ``fp`` may have an eXIf chunk after its pixels (one before them is in Pillow's ``info``
    already): its chunks listed from their headers, the pixels skipped; a file cut short says yes."""
    position = fp.tell()
    try:
        fp.seek(8)  # the signature
        while True:
            head = fp.read(8)
            if len(head) < 8:
                return True
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"eXIf", b"IEND"):
                return kind == b"eXIf"
            fp.seek(length + 4, io.SEEK_CUR)  # the data and its CRC
    finally:
        fp.seek(position)


def _exif(image):
    """``image.getexif()`` without decoding a PNG's pixels where it can: Pillow's PNG reader decodes the whole image
    (seconds and gigabytes for a big one) to look for an eXIf chunk after the pixels, so that is done only when the
    chunk list has one; otherwise the tags come from what the header holds (Pillow's generic reading: EXIF, raw
    profile, XMP orientation)."""
    from PIL import Image

    if image.format == "PNG" and "exif" not in image.info and not _png_exif_after_pixels(image.fp):
        return Image.Image.getexif(image)
    return image.getexif()


def read_image(path: str | Path) -> ImageFile:
    """Read an image file (8- or 16-bit, gray, RGB or RGBA; any path, unicode included) with what it carries: the
    pixels as ``[1, 3, H, W]`` float32 RGB 0..1 on the CPU (EXIF orientation applied), its alpha channel unless
    fully opaque, its EXIF and ICC profile (JPEG, PNG, WEBP, TIFF)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InvalidImageError(f"image not found: {path}")
    try:  # the budget, from the header: an image beyond it is never decoded
        header_size(path)
    except ImageTooLargeError as exc:
        raise ImageTooLargeError(f"{path.name}: {exc}") from None
    except InvalidImageError as exc:  # several frames or pages
        raise InvalidImageError(f"{path.name}: {exc}") from None
    except PILLOW_ERRORS:  # a header Pillow cannot read: OpenCV may still decode it (the budget checked then)
        pass
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # cv2.imread cannot open some unicode paths on Windows
        # UNCHANGED: gray, BGR or BGRA, 8 or 16 bit, as stored (the orientation is applied below, for every format)
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except (OSError, cv2.error) as exc:
        raise InvalidImageError(f"{path.name} could not be read: {exc}") from exc
    if image is None:
        raise InvalidImageError(f"{path.name} is not a readable image (empty, corrupt or an unsupported format)")
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise InvalidImageError(f"{path.name}: {image.dtype} pixels are not supported (expected 8 or 16 bit)")
    if image.ndim == 3 and image.shape[2] == 4 and image.dtype == np.uint8 and path.suffix.lower() in (".tif", ".tiff"):
        image = _tiff_rgba(path, image)
    orientation, exif, icc = _metadata(path)
    if icc is not None and icc_colour_space(icc) != "RGB":
        image, icc = _to_srgb(path, image, icc)
    if orientation in _ORIENTATIONS:
        image = _ORIENTATIONS[orientation](image)
    alpha = None
    if image.ndim == 3 and image.shape[2] in (2, 4):
        alpha = to_rgb_float(np.ascontiguousarray(image[:, :, -1]))[:, :1]  # [1, 1, H, W]
        if bool((alpha >= 1).all()):
            alpha = None  # fully opaque: nothing to keep
        image = image[:, :, :-1]
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:  # most photos: one float copy, no other
        height, width = image.shape[:2]
        check_budget(width, height, path.name)
        planes = torch.from_numpy(np.ascontiguousarray(image))  # [H, W, 3] BGR
        pixels = torch.empty((1, 3, height, width))
        for channel in range(3):  # BGR -> RGB, each plane straight into the [1, 3, H, W] float32 copy
            pixels[0, channel].copy_(planes[:, :, 2 - channel])
        return ImageFile(pixels.div_(255.0), alpha=alpha, exif=exif, icc_profile=icc)
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]  # BGR -> RGB
    return ImageFile(to_rgb_float(np.ascontiguousarray(image)), alpha=alpha, exif=exif, icc_profile=icc)


def _tiff_rgba(path: Path, decoded: np.ndarray) -> np.ndarray:
    """OpenCV reads an RGBA TIFF through libtiff's RGBA interface, which multiplies the colour by the alpha; Pillow
    reads it as stored. Returns BGRA as OpenCV would, with the colour as stored where Pillow can read the file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode != "RGBA" or image.size != (decoded.shape[1], decoded.shape[0]):
                return decoded
            rgba = np.asarray(image)
    except (*PILLOW_ERRORS, Image.DecompressionBombError):
        return decoded
    return np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]])


def icc_colour_space(profile: bytes) -> str:
    """The colour space of the data an ICC ``profile`` describes, from its header (bytes 16..19: ``RGB``, ``CMYK``,
    ``GRAY``, ``Lab``, ...); ``""`` for bytes too short to be a profile."""
    return profile[16:20].decode("latin-1").strip() if len(profile) >= 128 else ""


def _to_srgb(path: Path, decoded: np.ndarray, icc: bytes) -> tuple[np.ndarray, bytes | None]:
    """A file whose ICC profile describes another colour space than RGB (CMYK, YCCK read as CMYK, LAB, gray):
    (its pixels converted to sRGB through that profile, as ``[H, W, 3]`` uint8 BGR like OpenCV's, and no profile:
    untagged data is read as sRGB, and Little CMS's sRGB profile carries its creation time, so the output's bytes would
    change from run to run) where Pillow decodes it in that colour space at the size OpenCV found, without alpha;
    otherwise (``decoded``, no profile): OpenCV's plain conversion, and no profile that would not describe it."""
    from PIL import Image, ImageCms

    modes = {"CMYK": ("CMYK",), "Lab": ("LAB",)}.get(icc_colour_space(icc), ())  # a gray one: plain, untagged
    try:
        with Image.open(path) as image:
            if image.mode not in modes or image.size != (decoded.shape[1], decoded.shape[0]):
                raise ValueError(f"{image.mode} pixels, {icc_colour_space(icc) or 'unknown'} profile")
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            rgb = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if rgb is None:  # only with inPlace=True
                raise ValueError("no image converted")
    except (*PILLOW_ERRORS, Image.DecompressionBombError, ImageCms.PyCMSError) as exc:
        logger.info("%s: its %s ICC profile cannot be applied (%s); written without a profile", path.name,
                    icc_colour_space(icc) or "unreadable", exc)
        return decoded, None
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]), None


def load_image(path: str | Path) -> torch.Tensor:
    """``read_image(path).pixels``: ``[1, 3, H, W]`` float32 RGB 0..1 on the CPU."""
    return read_image(path).pixels


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file as ``read_image`` returns it (orientation applied), from its header where
    Pillow can read it (no decoding), else by decoding it. Raises ``InvalidImageError`` for an unreadable file or one
    of several frames or pages (``refuse_frames``), and ``ImageTooLargeError`` (one) for an image beyond the budget
    (``check_budget``), found from the header."""
    path = Path(path)
    try:
        width, height = header_size(path)
    except InvalidImageError:  # beyond the budget, or several frames
        raise
    except PILLOW_ERRORS:  # Pillow's UnidentifiedImageError is an OSError
        pixels = load_image(path)
        return int(pixels.shape[-1]), int(pixels.shape[-2])
    check_budget(width, height)
    return width, height


def header_size(file) -> tuple[int, int]:
    """(width, height) of an image, orientation applied, from its header alone (``file``: a path or a binary file
    object, e.g. the first bytes of an object in a store). ``ImageTooLargeError`` when Pillow's own
    decompression-bomb limit refuses it (a size beyond the budget, or Pillow's process-wide limit set lower by a
    host); ``InvalidImageError`` for an animated or multi-page image (``refuse_frames``); Pillow's other errors
    (``PILLOW_ERRORS``) propagate: the caller decides what an unreadable header means."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            width, height = image.size
            check_budget(width, height)  # before the EXIF, which can mean decoding the pixels
            turned = int(_exif(image).get(0x0112, 1) or 1) in (5, 6, 7, 8)
            refuse_frames(image)
    except Image.DecompressionBombError as exc:  # the size is in the header, but Pillow does not hand it out
        pixels = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageTooLargeError(f"image of more than {pixels:,} pixels {_BEYOND_BUDGET}") from exc
    return (height, width) if turned else (width, height)


#: how to turn a file of several frames or pages into still images, per format (in a refusal's message)
_EXTRACT_HINTS = {
    "WEBP": "magick IN.webp -coalesce frames/%05d.png (ImageMagick)",
    "PNG": "ffmpeg -i IN.png frames/%05d.png",
    "GIF": "ffmpeg -i IN.gif frames/%05d.png",
}


def refuse_frames(image) -> None:
    """``InvalidImageError`` for an open Pillow ``image`` of more than one frame (animated WEBP, APNG, GIF) or page
    (TIFF): only still images are restored, and flattening one to its first frame would lose the others silently. The
    count comes from the file's header and frame headers (no frame is decoded); a TIFF's reduced-resolution pages
    (NewSubfileType bit 0: previews of the page) and a camera JPEG's extra pictures (MPO: previews, depth) do not
    count. Leaves ``image`` on its first frame."""
    if image.format == "MPO" or not getattr(image, "is_animated", False):
        return
    if image.format == "TIFF":
        pages = 0
        for index in range(image.n_frames):
            image.seek(index)
            pages += not int(image.tag_v2.get(254, 0) or 0) & 1
        image.seek(0)
        if pages > 1:
            raise InvalidImageError(f"a multi-page TIFF ({pages} pages): only single images are restored; split "
                                    f"its pages into files first (e.g. magick IN.tif pages/%03d.png) and restore "
                                    f"those")
        return
    hint = _EXTRACT_HINTS.get(image.format, "ffmpeg -i IN frames/%05d.png")
    raise InvalidImageError(f"an animated {image.format} ({image.n_frames} frames): only still images are restored; "
                            f"extract its frames first (e.g. {hint}) and restore them as a sequence with "
                            f"--video-frames")


def same_format(a: str | Path, b: str | Path) -> bool:
    """Whether two file names have the same image format (``.jpg`` and ``.jpeg`` alike, case ignored)."""
    return _FORMATS.get(Path(a).suffix.lower()) == _FORMATS.get(Path(b).suffix.lower()) is not None


def to_bgr_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` 0..1 RGB tensor -> ``[H, W, 3]`` uint8 BGR array, rounded (OpenCV's layout)."""
    return np.ascontiguousarray(_to_uint8(image)[:, :, ::-1])


def _to_uint8(image: torch.Tensor, channels: int = 3) -> np.ndarray:
    """``[C, H, W]`` 0..1 -> ``[H, W, C]`` uint8, rounded; NaN/inf is an error, not black."""
    if image.dim() != 3 or image.shape[0] != channels:
        what = "RGB image [3, H, W]" if channels == 3 else "alpha channel [1, H, W]"
        raise InvalidImageError(f"expected one {what}, got {list(image.shape)}")
    image = image.detach().float()
    if not bool(torch.isfinite(image).all()):
        raise InvalidImageError("the image to save contains NaN or infinite values (a failed restoration?); "
                                "not written")
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _single(image: torch.Tensor) -> torch.Tensor:
    return image[0] if image.dim() == 4 and image.shape[0] == 1 else image


def encode_image(image: torch.Tensor, suffix: str, *, alpha: torch.Tensor | None = None, exif: bytes | None = None,
                 icc_profile: bytes | None = None, name: str = "image") -> bytes:
    """The bytes of an 8-bit image file of format ``suffix`` (one of ``IMAGE_SUFFIXES``) holding ``image``
    (``[1, 3, H, W]`` or ``[3, H, W]`` RGB 0..1), with ``alpha`` (``[1, 1, H, W]`` or ``[1, H, W]`` 0..1, resized to
    the image if needed) where the format holds it (PNG, WEBP, TIFF) and ``exif`` / ``icc_profile`` where it holds
    them (JPEG, PNG, WEBP, TIFF); what cannot be kept is logged as a warning naming ``name``. JPEG at quality 95,
    WEBP lossless (the colour under transparent pixels kept), TIFF uncompressed."""
    from PIL import Image

    suffix = suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InvalidImageError(f"cannot save {name}: the suffix must be one of {', '.join(IMAGE_SUFFIXES)}")
    pixels = _to_uint8(_single(image))
    if alpha is not None and suffix not in ALPHA_SUFFIXES:
        logger.warning("%s: %s files cannot hold transparency; written without it (use .png, .webp or .tif to "
                       "keep it)", name, suffix)
        alpha = None
    if alpha is not None:
        alpha = _single(alpha).float()
        if alpha.shape[-2:] != image.shape[-2:]:
            alpha = torch.nn.functional.interpolate(alpha[None], size=tuple(image.shape[-2:]), mode="bilinear",
                                                    align_corners=False)[0]
        pixels = np.concatenate([pixels, _to_uint8(alpha, channels=1)], axis=2)
    if (exif or icc_profile) and suffix not in METADATA_SUFFIXES:
        logger.warning("%s: %s files cannot hold EXIF or an ICC profile; written without them", name, suffix)
        exif = icc_profile = None
    options: dict = {"exif": exif, "icc_profile": icc_profile}
    options.update(_ENCODER_OPTIONS[_FORMATS[suffix]])
    options = {k: v for k, v in options.items() if v is not None}
    buffer = io.BytesIO()
    try:
        Image.fromarray(pixels, "RGBA" if alpha is not None else "RGB").save(buffer, _FORMATS[suffix], **options)
    except (OSError, ValueError, RuntimeError) as exc:  # Pillow's encoders raise all three
        raise InvalidImageError(f"could not encode {name} as {suffix}: {exc}") from exc
    return buffer.getvalue()
