"""Formats the CLI must not flatten or mis-tag (issue 27, item 5): animated and multi-page inputs are refused up front
with their frame or page count, and a CMYK input is written with a profile that describes the written RGB data.

Every file is made here with Pillow; the CMYK ICC profile too (``cmyk_profile``: Little CMS, through Pillow's
``ImageCms``, can create only Lab, XYZ and sRGB profiles)."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from helpers import cmd, face

from face_pipeline.errors import InvalidImageError
from face_pipeline.image import header_size, icc_colour_space, image_size, read_image


@pytest.fixture()
def main():
    import cli

    return cli.main


def _tag(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)  # ICC tags start on 4-byte boundaries


def cmyk_profile() -> bytes:
    """A small valid ICC v2 input profile for CMYK data (CMYK -> Lab through a 2-point lut8 CLUT, so Little CMS
    interpolates multilinearly between its 16 corners). Its colours are deliberately unlike the naive
    ``255 * (1 - c) * (1 - k)`` conversion, so a test can tell which one was applied."""
    corners = bytearray()
    for c in (0, 1):  # the first input channel varies slowest
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    lightness = max(0.0, (1 - k) * (92 - 25 * c - 35 * m - 8 * y))
                    a, b = 55 * m - 35 * c + 10 * y, 65 * y - 30 * c - 12 * m
                    corners += bytes([round(lightness * 255 / 100), round(a + 128), round(b + 128)])
    ramp = bytes(range(256))
    identity = struct.pack(">9i", *(65536 if i % 4 == 0 else 0 for i in range(9)))
    lut = b"mft1" + b"\0" * 4 + bytes([4, 3, 2, 0]) + identity + ramp * 4 + bytes(corners) + ramp * 3
    text = b"test CMYK\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 12 + b"\0" * 67
    white = b"XYZ " + b"\0" * 4 + struct.pack(">3i", round(0.9642 * 65536), 65536, round(0.8249 * 65536))
    tags = [(b"desc", _tag(desc)), (b"wtpt", _tag(white)), (b"A2B0", _tag(lut))]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"scnr" + b"CMYK" + b"Lab "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
              + struct.pack(">3i", round(0.9642 * 65536), 65536, round(0.8249 * 65536)) + b"\0" * 48)
    assert len(header) == 128
    return header + table + body


def animated_webp(path, frames: int = 3) -> None:
    from PIL import Image

    images = [Image.new("RGB", (64, 48), (40 * i, 90, 200 - 40 * i)) for i in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, lossless=True)


def multipage_tiff(path, pages: int = 2, *, preview: bool = False) -> None:
    """A TIFF of ``pages`` pages; with ``preview`` one page and a reduced-resolution copy (NewSubfileType 1)."""
    from PIL import Image, TiffImagePlugin

    first = Image.new("RGB", (64, 48), (120, 90, 60))
    if preview:
        info = TiffImagePlugin.ImageFileDirectory_v2()
        info[254] = 1
        small = Image.new("RGB", (16, 12), (120, 90, 60))
        small.encoderinfo = {"tiffinfo": info}
        first.save(path, save_all=True, append_images=[small])
        return
    first.save(path, save_all=True, append_images=[Image.new("RGB", (64, 48), (10, 20, 30 * i)) for i in
                                                   range(pages - 1)])


def test_animated_and_multipage_inputs_are_skipped_with_their_reason(tmp_path, main, capsys):
    from PIL import Image

    photo = face(tmp_path, "portrait.jpg")
    inputs = photo.parent
    animated_webp(inputs / "loop.webp", frames=3)
    multipage_tiff(inputs / "scan.tif", pages=2)
    still = [Image.new("RGB", (32, 32), (200, 0, 0)), Image.new("RGB", (32, 32), (0, 200, 0))]
    still[0].save(inputs / "blink.png", save_all=True, append_images=still[1:])  # an APNG of 2 frames
    status = main(cmd(tmp_path, inputs))
    captured = capsys.readouterr()
    assert status == 2, captured.err  # an input that could not be used, as the CLI documents
    assert captured.out.startswith("4 image(s): 1 restored, 0 unchanged, 3 skipped, 0 failed"), captured.out
    assert (f"skipped {inputs / 'loop.webp'}: an animated WEBP (3 frames): only still images are restored; extract "
            f"its frames first (e.g. magick IN.webp -coalesce frames/%05d.png (ImageMagick)) and restore them as a "
            f"sequence with --video-frames") in captured.err
    assert (f"skipped {inputs / 'scan.tif'}: a multi-page TIFF (2 pages): only single images are restored; split its "
            f"pages into files first (e.g. magick IN.tif pages/%03d.png) and restore those") in captured.err
    assert f"skipped {inputs / 'blink.png'}: an animated PNG (2 frames)" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["portrait.jpg"]


def test_frames_are_counted_from_the_header_and_previews_do_not_count(tmp_path):
    from PIL import Image

    animated_webp(tmp_path / "a.webp", frames=4)
    with pytest.raises(InvalidImageError, match=r"^a.webp: an animated WEBP \(4 frames\)"):
        read_image(tmp_path / "a.webp")
    with pytest.raises(InvalidImageError, match=r"an animated WEBP \(4 frames\)"):
        header_size(io.BytesIO((tmp_path / "a.webp").read_bytes()))  # the probe of an object in a store
    multipage_tiff(tmp_path / "three.tif", pages=3)
    with pytest.raises(InvalidImageError, match=r"a multi-page TIFF \(3 pages\)"):
        image_size(tmp_path / "three.tif")
    multipage_tiff(tmp_path / "preview.tif", preview=True)  # one page and its thumbnail: a still image
    assert image_size(tmp_path / "preview.tif") == (64, 48)
    assert read_image(tmp_path / "preview.tif").pixels.shape == (1, 3, 48, 64)
    Image.new("RGB", (40, 30), (1, 2, 3)).save(tmp_path / "one.webp", save_all=True, lossless=True)  # one frame
    assert image_size(tmp_path / "one.webp") == (40, 30)


def cmyk_photo(path, *, profile: bytes | None) -> np.ndarray:
    """The test portrait as a CMYK JPEG (Pillow's plain RGB -> CMYK), with ``profile`` embedded; returns its CMYK
    pixels as Pillow decodes them."""
    from conftest import data_file
    from PIL import Image

    with Image.open(data_file("faces", "grace_hopper.jpg")) as rgb:
        cmyk = rgb.convert("RGB").convert("CMYK")
    cmyk.save(path, quality=95, **({"icc_profile": profile} if profile else {}))
    with Image.open(path) as written:
        assert written.mode == "CMYK"
        return np.asarray(written)


def opencv_rgb(path) -> np.ndarray:
    """``path`` decoded by OpenCV (a CMYK JPEG converted plainly, as the CLI wrote it before), RGB."""
    bgr = cv2.imread(str(path))
    assert bgr is not None
    return bgr[:, :, ::-1]


def _far_from_the_face(pixels: np.ndarray) -> np.ndarray:
    return pixels[:, :60]  # the portrait's left edge (the face is in the middle): passed through unchanged


def test_a_cmyk_jpeg_with_a_profile_is_converted_through_it_to_untagged_srgb(tmp_path, main, capsys):
    from PIL import Image, ImageCms

    profile = cmyk_profile()
    assert icc_colour_space(profile) == "CMYK"
    source = tmp_path / "in" / "cmyk.jpg"
    source.parent.mkdir()
    cmyk_photo(source, profile=profile)
    with Image.open(source) as image:
        managed = np.asarray(ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                                       ImageCms.createProfile("sRGB"), outputMode="RGB"))
    plain = opencv_rgb(source)  # what the output held before: CMYK undone naively
    assert np.abs(managed.astype(int) - plain).mean() > 10  # the two conversions are told apart

    status = main(cmd(tmp_path, source, output=tmp_path / "restored.png"))
    assert status == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("1 image(s): 1 restored")
    with Image.open(tmp_path / "restored.png") as restored:
        assert restored.mode == "RGB" and "icc_profile" not in restored.info  # untagged: sRGB
        written = np.asarray(restored)
    assert np.array_equal(_far_from_the_face(written), _far_from_the_face(managed))
    assert np.abs(written.astype(int) - managed).mean() > 1  # and the face was restored


def test_a_cmyk_jpeg_without_a_profile_is_converted_plainly_and_written_without_one(tmp_path, main, capsys):
    from PIL import Image

    source = tmp_path / "in" / "cmyk.jpg"
    source.parent.mkdir()
    cmyk_photo(source, profile=None)
    plain = opencv_rgb(source)
    assert main(cmd(tmp_path, source, output=tmp_path / "restored.png")) == 0, capsys.readouterr().err
    with Image.open(tmp_path / "restored.png") as restored:
        assert restored.mode == "RGB" and "icc_profile" not in restored.info
        assert np.array_equal(_far_from_the_face(np.asarray(restored)), _far_from_the_face(plain))


def test_a_profile_that_does_not_fit_the_data_is_dropped(tmp_path):
    from PIL import Image

    path = tmp_path / "rgb_with_cmyk_profile.jpg"  # RGB pixels tagged with a CMYK profile (what the bug wrote)
    Image.new("RGB", (32, 24), (10, 120, 230)).save(path, quality=95, icc_profile=cmyk_profile())
    loaded = read_image(path)
    assert loaded.icc_profile is None
    expected = opencv_rgb(path)
    assert np.array_equal((loaded.pixels[0].permute(1, 2, 0) * 255).round().byte().numpy(), expected)
