"""image.py: every layout and dtype users hand in, the values that are rejected, and files in and out."""

from __future__ import annotations

import functools
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from conftest import data_file
from helpers import write_flat_png

from face_jobs.writer import save_image  # the atomic writer is the batch jobs'
from face_pipeline.errors import ImageTooLargeError, InvalidImageError
from face_pipeline.image import (
    MAX_PIXELS,
    MAX_SIDE,
    OVERSHOOT_TOLERANCE,
    encode_image,
    image_size,
    load_image,
    read_image,
    same_format,
    to_bgr_uint8,
    to_rgb_float,
)

RNG = np.random.default_rng(0)
RGB8 = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)
EXPECTED = torch.from_numpy(RGB8).permute(2, 0, 1)[None].float() / 255


def test_layouts_and_dtypes():
    assert torch.equal(to_rgb_float(RGB8), EXPECTED)
    assert torch.equal(to_rgb_float(RGB8[None]), EXPECTED)  # BHWC
    assert torch.equal(to_rgb_float(torch.from_numpy(RGB8)), EXPECTED)  # torch uint8
    assert torch.equal(to_rgb_float(EXPECTED, channels_last=False), EXPECTED)  # BCHW
    assert torch.equal(to_rgb_float(np.dstack([RGB8, np.zeros((12, 16), np.uint8)])), EXPECTED)  # RGBA: alpha dropped
    gray = to_rgb_float(RGB8[:, :, 0])
    assert gray.shape == (1, 3, 12, 16) and torch.equal(gray[0, 0], gray[0, 2])
    assert torch.equal(gray[:, :1], EXPECTED[:, :1])
    assert torch.equal(to_rgb_float(np.dstack([RGB8[:, :, :1], RGB8[:, :, 1:2]])), gray)  # gray + alpha
    wide = to_rgb_float(RGB8.astype(np.uint16) * 257)  # 16-bit
    assert wide.dtype == torch.float32 and (wide - EXPECTED).abs().max() < 1e-6
    assert torch.equal(to_rgb_float(RGB8.astype(np.float64) / 255), EXPECTED)
    tiny = to_rgb_float(np.zeros((16, 16, 3), np.uint8))
    assert tiny.shape == (1, 3, 16, 16)


def test_slight_overshoot_is_clamped_and_the_rest_rejected():
    ringing = np.full((8, 8, 3), 0.5, np.float32)
    ringing[0, 0] = (1.03, -0.02, 0.5)
    out = to_rgb_float(ringing)
    assert out.max() == 1 and out.min() == 0
    with pytest.raises(InvalidImageError, match=r"float images must hold values in 0\.\.1; found 0\.5\.\.255 "
                                                r"\(this looks like 0\.\.255: divide by 255\)"):
        to_rgb_float(np.concatenate([ringing[:4] * 0 + 0.5, np.full((4, 8, 3), 255.0, np.float32)]))
    with pytest.raises(InvalidImageError, match=r"found -1\.\.1 \(this looks like -1\.\.1: convert with x \* 0\.5"):
        to_rgb_float(np.linspace(-1, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3))
    with pytest.raises(InvalidImageError, match=r"found -128\.\.127 \(neither 0\.\.1, 0\.\.255 nor -1\.\.1"):
        to_rgb_float(np.linspace(-128, 127, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3))
    overshoot = ringing.copy()
    overshoot[0, 0] = (1.2, -0.2, 0.5)  # a bicubic upscale's ringing: too much for the library's strict check
    with pytest.raises(InvalidImageError, match=r"found -0\.2\.\.1\.2 \(a little outside 0\.\.1, as resampling "
                                                r"overshoot gives: clamp it to 0\.\.1\)"):
        to_rgb_float(overshoot)
    clipped = to_rgb_float(overshoot, tolerance=OVERSHOOT_TOLERANCE)  # ... accepted where a host asks for it
    assert clipped.max() == 1 and clipped.min() == 0 and clipped[0, 0, 1, 1] == 0.5
    with pytest.raises(InvalidImageError, match=r"this looks like 0\.\.255"):
        to_rgb_float(np.full((8, 8, 3), 1.6, np.float32), tolerance=OVERSHOOT_TOLERANCE)
    with pytest.raises(InvalidImageError, match=r"this looks like -1\.\.1"):
        to_rgb_float(np.full((8, 8, 3), -0.6, np.float32), tolerance=OVERSHOOT_TOLERANCE)


@pytest.mark.parametrize("bad, message", [
    (np.full((8, 8, 3), np.nan, np.float32), "NaN or infinite"),
    (np.full((8, 8, 3), np.inf, np.float32), "NaN or infinite"),
    (np.zeros((8, 8, 5), np.uint8), r"expected 1 \(gray\), 2 \(gray\+alpha\), 3 \(RGB\) or 4 \(RGBA\) channels in "
                                    r"\[B, H, W, C\], got 5 \(shape \[8, 8, 5\]\)"),
    (np.zeros((0, 8, 3), np.uint8), r"the image is empty: shape \[0, 8, 3\]"),
    (np.zeros((1, 1, 8, 8, 3), np.uint8), r"2, 3 or 4 dimensions .* got shape \[1, 1, 8, 8, 3\]"),
    (np.zeros((8, 8, 3), np.int32), "unsupported image dtype int32: expected uint8, uint16 or float"),
    (np.zeros((8, 8, 3), bool), "unsupported image dtype bool"),
    (torch.zeros((8, 8, 3), dtype=torch.int64), "unsupported image dtype torch.int64"),
    ([[0, 1]], "numpy array or torch tensor, got list"),
])
def test_rejected_with_a_clear_message(bad, message):
    with pytest.raises(InvalidImageError, match=message):
        to_rgb_float(bad)


def test_oversized_is_rejected_without_allocating():
    huge = torch.zeros(1, 3, 1, 1).expand(1, 3, 2, MAX_SIDE + 1)  # no real memory behind it
    with pytest.raises(InvalidImageError, match=f"image of {MAX_SIDE + 1}x2 is larger than the supported"):
        to_rgb_float(huge, channels_last=False)


def test_files_round_trip_with_unicode_paths(tmp_path):
    folder = tmp_path / "фото 写真"
    save_image(EXPECTED, folder / "ça.png")  # folder created
    assert torch.equal(load_image(folder / "ça.png"), EXPECTED)
    smooth = torch.stack(torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0.2, 0.8, 60), indexing="ij"))
    smooth = torch.cat([smooth, smooth[:1].flip(-1)])  # [3, 40, 60] gradients: JPEG keeps them closely
    save_image(smooth, folder / "b.jpg")
    assert (load_image(folder / "b.jpg")[0] - smooth).abs().mean() < 0.01
    assert to_bgr_uint8(EXPECTED[0]).shape == (12, 16, 3)
    assert np.array_equal(to_bgr_uint8(EXPECTED[0]), RGB8[:, :, ::-1])


def test_16_bit_gray_and_rgba_files(tmp_path):
    wide = RNG.integers(0, 65536, (10, 14, 3), dtype=np.uint16)
    cv2.imencode(".png", wide)[1].tofile(str(tmp_path / "wide.png"))  # BGR on disk
    loaded = load_image(tmp_path / "wide.png")
    assert torch.equal(loaded, torch.from_numpy(wide[:, :, ::-1].astype(np.float32) / 65535).permute(2, 0, 1)[None])
    cv2.imencode(".png", RGB8[:, :, 0])[1].tofile(str(tmp_path / "gray.png"))
    gray = load_image(tmp_path / "gray.png")
    assert gray.shape == (1, 3, 12, 16) and torch.equal(gray[0, 1], EXPECTED[0, 0])
    bgra = np.dstack([RGB8[:, :, ::-1], np.full((12, 16), 7, np.uint8)])
    cv2.imencode(".png", bgra)[1].tofile(str(tmp_path / "rgba.png"))
    assert torch.equal(load_image(tmp_path / "rgba.png"), EXPECTED)


def test_bad_files(tmp_path):
    with pytest.raises(InvalidImageError, match="image not found: .*missing.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all" * 10)
    with pytest.raises(InvalidImageError, match="broken.jpg is not a readable image"):
        load_image(tmp_path / "broken.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty.png is not a readable image"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(InvalidImageError, match=r"cannot save x\.gif: the suffix must be one of \.png"):
        save_image(EXPECTED, tmp_path / "x.gif")
    broken = EXPECTED.clone()
    broken[0, 1, 2, 3] = float("nan")
    with pytest.raises(InvalidImageError, match="the image to save contains NaN or infinite values"):
        save_image(broken, tmp_path / "nan.png")
    assert not (tmp_path / "nan.png").exists()


def test_a_photo_loads_as_rgb():
    image = load_image(data_file("faces", "astronaut.jpg"))
    assert image.shape == (1, 3, 512, 512) and image.dtype == torch.float32
    assert image[0, 0].mean() > image[0, 2].mean()  # the astronaut's suit and flag: more red than blue, not BGR


# ------------------------------------------------------------------------- what an image file carries, kept
@functools.cache
def _profile() -> bytes:
    """One sRGB ICC profile for the whole module: LittleCMS stamps a new profile with the current time (header
    bytes 24-35), so two calls a second apart differ and a round-trip check against a fresh one failed now and
    then."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation: int = 1) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"  # DateTimeOriginal
    return exif.tobytes()


ALPHA = np.linspace(0, 255, 12 * 16).reshape(12, 16).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif", ".tiff"])
def test_alpha_exif_and_icc_survive_a_round_trip(tmp_path, suffix):
    from PIL import Image

    source = tmp_path / f"in{suffix}"
    lossless = {"lossless": True, "exact": True} if suffix == ".webp" else {}
    Image.fromarray(np.dstack([RGB8, ALPHA]), "RGBA").save(source, exif=_exif(), icc_profile=_profile(), **lossless)
    loaded = read_image(source)
    assert torch.equal(loaded.pixels, EXPECTED)
    assert torch.equal((loaded.alpha[0, 0] * 255).round().byte(), torch.from_numpy(ALPHA))
    assert loaded.icc_profile == _profile()
    save_image(loaded.pixels, tmp_path / f"out{suffix}", alpha=loaded.alpha, exif=loaded.exif,
               icc_profile=loaded.icc_profile)
    with Image.open(tmp_path / f"out{suffix}") as written:
        assert written.mode == "RGBA" and np.array_equal(np.asarray(written)[:, :, 3], ALPHA)
        assert np.array_equal(np.asarray(written)[:, :, :3], RGB8)
        assert written.info.get("icc_profile") == _profile()
        exif = written.getexif()
        assert exif.get(0x010F) == "TestCam" and exif.get_ifd(0x8769).get(0x9003) == "2024:05:06 07:08:09"


def test_jpeg_keeps_exif_and_icc_and_warns_about_alpha(tmp_path, caplog):
    from PIL import Image

    source = tmp_path / "in.jpg"
    Image.fromarray(RGB8).save(source, quality=100, exif=_exif(orientation=6), icc_profile=_profile())
    loaded = read_image(source)
    assert loaded.pixels.shape == (1, 3, 16, 12) and loaded.alpha is None  # orientation 6: turned upright
    assert image_size(source) == (12, 16)
    save_image(loaded.pixels, tmp_path / "out.jpg", alpha=torch.full((1, 1, 16, 12), 0.5), exif=loaded.exif,
               icc_profile=loaded.icc_profile)
    assert "out.jpg: .jpg files cannot hold transparency; written without it" in caplog.text
    with Image.open(tmp_path / "out.jpg") as written:
        assert written.size == (12, 16) and written.mode == "RGB"
        assert written.getexif().get(0x0112) == 1 and written.getexif().get(0x010F) == "TestCam"  # upright now
        assert written.info.get("icc_profile") == _profile()
    assert encode_image(loaded.pixels, ".bmp", exif=loaded.exif, name="x.bmp")[:2] == b"BM"
    assert "x.bmp: .bmp files cannot hold EXIF or an ICC profile" in caplog.text


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_as_pillow_applies_it(tmp_path, orientation):
    from PIL import Image, ImageOps

    path = tmp_path / "o.png"
    Image.fromarray(RGB8).save(path, exif=_exif(orientation))
    with Image.open(path) as image:
        upright = np.asarray(ImageOps.exif_transpose(image))
    expected = torch.from_numpy(upright.copy()).permute(2, 0, 1)[None].float() / 255
    assert torch.equal(load_image(path), expected)
    assert image_size(path) == (expected.shape[-1], expected.shape[-2])


def test_opaque_alpha_is_not_kept_and_16_bit_alpha_is(tmp_path):
    from PIL import Image

    Image.fromarray(np.dstack([RGB8, np.full((12, 16), 255, np.uint8)]), "RGBA").save(tmp_path / "opaque.png")
    assert read_image(tmp_path / "opaque.png").alpha is None
    wide = np.dstack([RGB8.astype(np.uint16) * 257, ALPHA.astype(np.uint16) * 257])
    cv2.imencode(".png", wide[:, :, [2, 1, 0, 3]])[1].tofile(str(tmp_path / "wide.png"))
    loaded = read_image(tmp_path / "wide.png")
    assert torch.equal(loaded.pixels, EXPECTED) and torch.equal(loaded.alpha[0, 0], torch.from_numpy(ALPHA) / 255.0)


def test_same_format():
    assert same_format("a.JPG", "b.jpeg") and same_format("a.tif", "b.TIFF") and not same_format("a.png", "a.jpg")
    assert not same_format("a", "b") and not same_format("a.gif", "b.gif")


BEYOND = "is larger than the supported 16384 pixels per side and 150 megapixels in all; downscale it first"


def _never(*args, **kwargs):
    raise AssertionError("an image beyond the budget was decoded")


def test_one_budget_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    """A 16000x16000 PNG of 0.8 MB (1 GB of pixels, 3 GB as float32) is refused from its header, with the one message
    of the budget, whatever Pillow's own decompression-bomb limit; it is never decoded."""
    from PIL import Image

    assert (MAX_SIDE, MAX_PIXELS) == (16384, 150_000_000)
    big = write_flat_png(tmp_path / "big.png", 16000, 16000)
    wide = write_flat_png(tmp_path / "wide.png", 16385, 8)
    monkeypatch.setattr(cv2, "imdecode", _never)
    monkeypatch.setattr(Image.core, "zip_decoder", _never)  # Pillow's PNG decoder
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", MAX_PIXELS)  # what the command line sets (apply_budget_to_pillow)
    with pytest.raises(ImageTooLargeError, match=f"^image of 16000x16000 {BEYOND}$"):
        image_size(big)
    with pytest.raises(ImageTooLargeError, match=f"^big.png: image of 16000x16000 {BEYOND}$"):
        read_image(big)
    with pytest.raises(ImageTooLargeError, match=f"^wide.png: image of 16385x8 {BEYOND}$"):
        read_image(wide)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89478485)  # Pillow's default (a host's): its error, our budget
    with pytest.raises(ImageTooLargeError, match=f"^big.png: image of more than 178,956,970 pixels {BEYOND}$"):
        read_image(big)
    with pytest.raises(ImageTooLargeError, match=f"^image of 17000x2 {BEYOND}$"):
        to_rgb_float(torch.zeros(1, 1, 1, 1).expand(1, 3, 2, 17000), channels_last=False)
    with pytest.raises(ImageTooLargeError, match=f"^image of 12500x12500 {BEYOND}$"):
        to_rgb_float(torch.zeros(1, 1, 1, 1).expand(1, 3, 12500, 12500), channels_last=False)


def _with_chunk_before_end(png: bytes, kind: bytes, data: bytes) -> bytes:
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    end = png.rindex(b"IEND") - 4
    return png[:end] + chunk + png[end:]


def test_a_png_header_is_read_without_decoding_its_pixels_unless_its_exif_follows_them(tmp_path, monkeypatch):
    """Pillow's PNG reader decodes the whole image to look for an eXIf chunk after the pixels (seconds and
    gigabytes for a big image, three times per input before): the chunk list is read first instead."""
    from PIL import Image, ImageFile

    flat = write_flat_png(tmp_path / "flat.png", 300, 200)
    exif = Image.Exif()
    exif[0x0112] = 6  # turned: width and height swap
    late = tmp_path / "late.png"
    late.write_bytes(_with_chunk_before_end(flat.read_bytes(), b"eXIf", exif.tobytes()[6:]))  # no "Exif\0\0"
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(1) or real_load(self))
    assert image_size(flat) == (300, 200) and not loads
    assert image_size(late) == (200, 300) and loads  # the late eXIf is found and read, as Pillow reads it
    assert read_image(late).pixels.shape == (1, 3, 300, 200)
    loads.clear()
    assert read_image(flat).pixels.shape == (1, 3, 200, 300) and not loads  # decoded by OpenCV only


def test_an_8_bit_photo_reads_as_before(tmp_path):
    """The 8-bit RGB path (planes copied straight into the float frame) gives exactly ``to_rgb_float``'s pixels."""
    photo = data_file("faces", "grace_hopper.jpg")
    bgr = cv2.imread(str(photo))
    assert torch.equal(read_image(photo).pixels, to_rgb_float(np.ascontiguousarray(bgr[:, :, ::-1])))
    assert torch.equal(read_image(photo).pixels, torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None] / 255)


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("BMP", ".bmp"),
                                         ("TIFF", ".tif")])
def test_a_damaged_file_is_an_invalid_image_and_nothing_else(tmp_path, fmt, suffix):
    """Files cut short or with bytes changed (header, EXIF, pixels): reading their size or their pixels raises
    ``InvalidImageError`` or works, never another error (a flipped BMP header claims 53 gigapixels: Pillow's
    DecompressionBombError ended the whole command-line run before)."""
    import io
    import random

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "camera"
    buffer = io.BytesIO()
    Image.fromarray(RGB8).save(buffer, fmt, **({} if fmt == "BMP" else {"exif": exif.tobytes()}))
    good, rng = buffer.getvalue(), random.Random(suffix)
    for trial in range(120):
        data = bytearray(good)
        if trial % 3 == 0:
            data = data[:rng.randrange(1, len(data))]
        else:
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(8 if trial % 3 == 1 else 0, min(len(data), 80 if trial % 3 == 2 else len(data)))] \
                    = rng.randrange(256)
        path = tmp_path / f"damaged{trial}{suffix}"
        path.write_bytes(bytes(data))
        for read in (image_size, read_image):
            try:
                read(path)
            except InvalidImageError:
                pass
