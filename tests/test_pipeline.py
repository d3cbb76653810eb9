"""The whole chain on real photos with the reference weights and real detectors, and the bad inputs users hit."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import data_file, require_shared

from face_pipeline.detection import load_detector
from face_pipeline.errors import InvalidImageError
from face_pipeline.image import load_image, to_rgb_float
from face_pipeline.pipeline import LibraryHost, PipelineOptions, run_pipeline
from gpen_arch import load_gpen_file


@pytest.fixture(scope="module")
def model():
    return load_gpen_file(data_file("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors"))


@pytest.fixture(scope="module")
def detector():
    return load_detector("yunet_opencv", weights_dir=data_file("detectors"))


@pytest.fixture(scope="module")
def photo():
    return load_image(data_file("faces", "grace_hopper.jpg"))  # [1, 3, 600, 512], one face


class Gray(torch.nn.Module):
    """A stand-in GPEN for runs about geometry, not the network: returns a flat mid-gray face."""

    config = type("Config", (), {"size": 256})()

    def forward(self, x):
        return torch.zeros_like(x)


def test_three_frames_through_detect_align_restore_paste(model, photo):
    frames = torch.cat([photo, torch.roll(photo, 6, dims=-1), torch.roll(photo, 12, dims=-1)])  # a slow pan
    detector = load_detector("retinaface_mobile0.25", weights_dir=data_file("detectors"))
    progress = []
    options = PipelineOptions.of(batch_size=2, color_correction=False, track=True)  # a video; colour correction
    # would shift the face
    result, report = run_pipeline(frames, model=model, detector=detector, options=options,
                                  host=LibraryHost(on_progress=lambda done, total: progress.append((done, total))))
    assert report.images == 3 and report.faces_found == 3 and report.faces_restored == 3 and report.scale == 1
    assert progress == [(2, 3), (3, 3)]
    assert set(report.stage_seconds) == {"detect", "align", "restore", "paste"}
    assert result.images.shape == frames.shape and result.mask.shape == (3, 600, 512)
    assert result.face_masks.shape == (3, 600, 512)
    assert [f.track_id for f in report.faces.faces] == [0, 0, 0]
    eye_x = [f.landmarks[0][0] for f in report.faces.faces]
    assert 0 < eye_x[1] - eye_x[0] < eye_x[2] - eye_x[0] < 12.5  # smoothed, yet following the pan
    for i in range(3):
        inside, outside = result.mask[i] > 0.99, result.mask[i] == 0
        assert inside.sum() > 100 * 100 and outside.sum() > 0.5 * 600 * 512
        assert (result.images[i][:, inside] - frames[i][:, inside]).abs().mean() > 0.05  # restored (noise weights)
        assert torch.equal(result.images[i][:, outside], frames[i][:, outside])
    # the face in the output is the restored crop warped back: compare at the left eye's position
    x, y = (round(v) for v in report.faces.faces[0].landmarks[0])
    crop_xy = report.faces.affines[0].numpy() @ np.array([x, y, 1.0])
    cx, cy = (round(v) for v in crop_xy)
    restored_px = report.faces.restored[0][:, cy - 1:cy + 2, cx - 1:cx + 2].mean((1, 2))
    pasted_px = result.images[0][:, y - 1:y + 2, x - 1:x + 2].mean((1, 2))
    assert (restored_px - pasted_px).abs().max() < 0.03


def test_interrupt_stops_the_run(model, detector, photo):
    class Cancelled(Exception):
        pass

    calls = []

    def cancel_at_restore():
        calls.append(1)
        if len(calls) == 2:  # after detection, before the first restore batch
            raise Cancelled

    with pytest.raises(Cancelled):
        run_pipeline(photo, model=model, detector=detector, host=LibraryHost(interrupt=cancel_at_restore))


def test_no_face_comes_back_unchanged_with_a_log_line(model, detector, caplog):
    image = torch.full((2, 3, 64, 80), 0.3)
    with caplog.at_level(logging.INFO, logger="face_pipeline"):
        result, report = run_pipeline(image, model=model, detector=detector)
    assert report.faces_found == 0 and report.faces_restored == 0 and torch.equal(result.images, image)
    assert "no face found in 2 of 2 image(s) (index 0, 1): returned unchanged" in caplog.text
    assert result.mask.abs().sum() == 0
    result, _ = run_pipeline(image, model=model, detector=detector, options=PipelineOptions.of(scale=2))
    assert result.images.shape == (2, 3, 128, 160) and (result.images - 0.3).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["gray", "rgba", "uint16", "tiny", "border"])
def test_awkward_images(model, detector, photo, kind):
    """Conversions and geometry; the real network only where the crop leaves the image (the others use Gray)."""
    rgb8 = (photo[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if kind == "gray":
        image = to_rgb_float(rgb8.mean(-1).astype(np.uint8))
        assert torch.equal(image[0, 0], image[0, 1])
    elif kind == "rgba":
        image = to_rgb_float(np.dstack([rgb8, np.full(rgb8.shape[:2], 128, np.uint8)]))
    elif kind == "uint16":
        image = to_rgb_float(rgb8.astype(np.uint16) * 257)
        assert torch.allclose(image, photo, atol=1e-6)
    elif kind == "tiny":
        image = F.interpolate(photo, size=(16, 16), mode="area")
    else:
        image = photo[:, :, :, 240:]  # the face cut by the left border at mid-face
    result, report = run_pipeline(image, model=model if kind == "border" else Gray(), detector=detector)
    assert result.images.shape == image.shape and torch.isfinite(result.images).all()
    assert result.images.min() >= 0 and result.images.max() <= 1
    if kind in ("gray", "rgba", "uint16", "border"):
        assert report.faces_restored == 1
        assert (result.images - image).abs().amax() > 0.2  # the face was replaced
    else:
        assert report.faces_found == 0 and torch.equal(result.images, image)
    if kind == "border":  # the part of the crop outside the image (black) must not leak into the picture
        near_border = result.mask[0, :, :3] > 0.5
        assert near_border.any() and result.images[0][:, :, :3][:, near_border].mean() > 0.15


def test_8k_frame(photo):
    big = F.interpolate(photo, size=(4320, 7680), mode="bilinear", align_corners=False)
    detector = load_detector("yunet_opencv", weights_dir=data_file("detectors"))
    result, report = run_pipeline(big, model=Gray(), detector=detector,
                                  options=PipelineOptions.of(color_correction=False))
    assert report.faces_restored == 1 and result.images.shape == big.shape
    face = report.faces.faces[0]
    assert face.width > 1000  # found on the downscaled copy, coordinates in the 8K frame
    x1, y1, x2, y2 = (int(v) for v in face.box)
    centre = result.images[0, :, (y1 + y2) // 2, (x1 + x2) // 2]
    assert (centre - 0.5).abs().max() < 0.01  # the stand-in's gray face is there


def test_solvay_group_photo_at_auto_scale(detector):
    image = load_image(require_shared("faces", "solvay_conference_1927.png"))
    result, report = run_pipeline(image, model=Gray(), detector=detector,
                                  options=PipelineOptions.of(scale="auto", max_output_size=3000, batch_size=8))
    assert report.faces_found >= 27 and report.faces_restored == report.faces_found
    assert result.scale == 2 and result.images.shape[-2:] == (1136, 2656)
    assert result.face_masks.shape[0] == report.faces_restored


def test_selection_options(detector):
    image = load_image(require_shared("faces", "solvay_conference_1927.png"))
    _, report = run_pipeline(image, model=Gray(), detector=detector,
                             options=PipelineOptions.of(select="largest", strength=0.0))
    assert report.faces_found >= 27 and report.faces_restored == 1
    _, report = run_pipeline(image, model=Gray(), detector=detector,
                             options=PipelineOptions.of(max_faces=5, strength=0.0))
    assert report.faces_restored == 5


def test_bad_values_and_options_are_rejected_clearly(model, detector):
    nan = torch.full((1, 3, 32, 32), 0.5)
    nan[0, 1, 3, 3] = float("nan")
    with pytest.raises(InvalidImageError, match="the images contain NaN or infinite values"):
        run_pipeline(nan, model=model, detector=detector)
    with pytest.raises(InvalidImageError, match=r"found 0\.5\.\.255 \(this looks like 0\.\.255"):
        run_pipeline(torch.cat([nan.nan_to_num(0.5), torch.full((1, 3, 32, 32), 255.0)]), model=model,
                     detector=detector)
    with pytest.raises(InvalidImageError, match=r"images must be a \[B, 3, H, W\] tensor .* got \[32, 32, 3\]"):
        run_pipeline(torch.zeros(32, 32, 3), model=model, detector=detector)
    with pytest.raises(InvalidImageError, match="NaN or infinite"):
        to_rgb_float(np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="mask_type must be one of rounded_rect, ellipse, parsing, parsing_no_hair, "
                                         "parsing_official, rect_official; "
                                         "got 'square'"):
        PipelineOptions.of(mask_type="square")
    with pytest.raises(ValueError, match=r"scale must be one of 1, 2, 4 or 'auto'; got 3"):
        PipelineOptions.of(scale=3)
    with pytest.raises(ValueError, match="strength must be a number from 0 to 1, got 2"):
        PipelineOptions.of(strength=2)


def test_the_package_works_under_another_name_and_imports_cheaply():
    """The import trap: ComfyUI imports the repository under its folder name, so face_pipeline may only use relative
    imports; importing it must not load OpenCV, facexlib or kornia."""
    import importlib.util
    import subprocess
    import sys

    from conftest import REPO_ROOT

    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location("
        f"'renamed_fp', {str(REPO_ROOT / 'face_pipeline' / '__init__.py')!r},"
        f" submodule_search_locations=[{str(REPO_ROOT / 'face_pipeline')!r}])\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['renamed_fp'] = module\n"
        "spec.loader.exec_module(module)\n"
        "assert module.run_pipeline.__module__ == 'renamed_fp.pipeline'\n"
        "assert 'face_pipeline' not in sys.modules, 'an absolute import of face_pipeline'\n"
        "heavy = [m for m in ('cv2', 'kornia', 'facexlib', 'gpen_arch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    assert importlib.util.find_spec("face_pipeline") is not None
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert done.returncode == 0, done.stderr


def test_each_stage_owns_a_frozen_validated_record():
    """The records: validated once when built, frozen, picklable (the Ray engine ships them), composed by
    ``PipelineOptions``; ``of`` routes each option name to its stage's record."""
    import dataclasses
    import inspect
    import pickle

    from face_pipeline.fields import spec
    from face_pipeline.paste import paste_faces
    from face_pipeline.pipeline import DetectOptions, PasteOptions, RestoreOptions, VideoOptions

    options = PipelineOptions.of(strength=0.5, mask_type="ellipse", track=True, max_faces=2, template="ffhq")
    assert options.restore == RestoreOptions(strength=0.5) and options.paste == PasteOptions(mask_type="ellipse")
    assert options.video == VideoOptions(track=True) and options.detect == DetectOptions(max_faces=2)
    assert options.align.template == "ffhq"
    assert pickle.loads(pickle.dumps(options)) == options
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.restore.strength = 1.0
    with pytest.raises(TypeError, match="'sharpness' is not an option of any stage"):
        PipelineOptions.of(sharpness=1)
    with pytest.raises(ValueError, match="restore must be a RestoreOptions, got PasteOptions"):
        PipelineOptions(restore=PasteOptions())
    with pytest.raises(ValueError, match="fill_gaps must be a whole number of at least 0, got 1.5"):
        VideoOptions(fill_gaps=1.5)
    with pytest.raises(ValueError, match="select must be one of all, largest, indices; got 'first'"):
        DetectOptions(select="first")
    assert spec(PasteOptions, "feather").high == 0.5 and spec(RestoreOptions, "mode").choices[0] == "restore"
    # paste_faces takes the record itself, no option of it one by one: the record and its use are all there is
    flat = set(inspect.signature(paste_faces).parameters) & {f.name for f in dataclasses.fields(PasteOptions)}
    assert not flat and inspect.signature(paste_faces).parameters["options"].default == PasteOptions()


def test_the_cli_flags_take_their_defaults_and_choices_from_the_records():
    import cli

    defaults = cli.build_options(cli.parse_args(["photo.jpg", "--model", "m.pth", "--output", "out"]))
    assert defaults == PipelineOptions.of(parsing_dir=str(cli.DEFAULT_DETECTOR_DIR))
    args = cli.parse_args(["p.jpg", "--model", "m.pth", "--output", "o", "--scale", "auto", "--mask", "parsing",
                           "--threshold", "0.5", "--fill-gaps", "0", "--no-color-correction", "--no-keep-gray"])
    options = cli.build_options(args)
    assert options.paste.keep_gray is False and args.keep_gray is False  # a boolean field: its --no- flag
    assert {name for _, name in cli.OPTION_FLAGS.values()} >= {"color_correction", "keep_gray", "feather", "scale"}
    assert options.paste.scale == "auto" and options.paste.mask_type == "parsing"
    assert options.detect.score_threshold == 0.5 and options.video.fill_gaps == 0
    assert options.paste.color_correction is False


def test_the_pipeline_takes_one_host_object():
    """The host's behaviour comes in one object (``protocols.Host``), not also by overridable hooks."""
    import gpen_arch
    from face_pipeline.pipeline import Pipeline
    from face_pipeline.protocols import Host, RestorationModel

    host = LibraryHost()
    assert isinstance(host, Host) and Pipeline().host is Pipeline().host  # the default LibraryHost
    assert isinstance(gpen_arch.GPEN(gpen_arch.GPENConfig(size=256, narrow=0.0625)), RestorationModel)
    for hook in ("detecting", "model_for", "progress_for", "prepare_paste", "notify", "memory"):
        assert not hasattr(Pipeline, hook), hook
    with pytest.raises(TypeError, match="host must be a face_pipeline.protocols.Host .*, got MemoryPolicy"):
        Pipeline(host=host.memory)
    calls = []
    traced = LibraryHost(on_progress=lambda done, total: calls.append((done, total)), interrupt=lambda: calls.append(0))
    traced.check_interrupt()
    traced.progress(3)(1, 3)
    assert calls == [0, (1, 3)]
