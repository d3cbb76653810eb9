"""cli.py run as a user runs it (subprocesses), and its error paths (in-process, faster). The model is a compact
vector (tests/data, random weights at reduced width: the "restored" face is noise, but every stage runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, data_file

from face_pipeline.pipeline import Pipeline

MODEL_256 = ("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors")
# Any download attempt goes to a closed local port and fails: these runs must not need the network.
OFFLINE = dict(os.environ, http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")


def run_cli(*args: str, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=str(cwd), timeout=600, env=OFFLINE)


def common(tmp_path) -> list[str]:
    """The compact model, and an empty detector folder: OpenCV YuNet (the default) comes from the pack's own copy."""
    return ["--model", str(data_file(*MODEL_256)), "--output", str(tmp_path / "out"), "--detector-dir",
            str(tmp_path / "no-detectors"), "--no-download"]


def test_restores_a_face_offline_with_only_the_bundled_detector(tmp_path):
    """A fresh machine: no network, no detector file anywhere, the model given by its bare file name."""
    shutil.copy(data_file(*MODEL_256), tmp_path / "GPEN-test.safetensors")
    photo = data_file("faces", "grace_hopper.jpg")
    out = run_cli(str(photo), "--model", "GPEN-test.safetensors", "--output", "out", "--detector-dir",
                  str(tmp_path / "detectors"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(
        "1 image(s): 1 restored, 0 unchanged, 0 skipped, 0 failed; faces: 1 found, 1 restored; ")
    assert not (tmp_path / "detectors").exists()  # nothing downloaded, nothing written there
    restored = cv2.imread(str(tmp_path / "out" / "grace_hopper.jpg")).astype(float)
    original = cv2.imread(str(photo)).astype(float)
    assert restored.shape == original.shape == (600, 512, 3)
    face = np.abs(restored[150:330, 170:330] - original[150:330, 170:330]).mean()
    corner = np.abs(restored[:100, :100] - original[:100, :100]).mean()
    assert face > 8 and corner < 3  # the face was replaced (by noise: random weights), the rest kept


def test_model_name_lookup(tmp_path, monkeypatch):
    import cli

    monkeypatch.setattr(cli, "MODELS_DIR", tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "gpen").mkdir(parents=True)
    (tmp_path / "models" / "gpen" / "GPEN-BFR-512.pth").write_bytes(b"x")
    assert cli.resolve_model_path("GPEN-BFR-512.pth") == tmp_path / "models" / "gpen" / "GPEN-BFR-512.pth"
    (tmp_path / "GPEN-BFR-512.pth").write_bytes(b"y")  # a file of that name in the current folder wins, as typed
    assert cli.resolve_model_path("GPEN-BFR-512.pth") == Path("GPEN-BFR-512.pth")
    assert cli.resolve_model_path("sub/GPEN-BFR-512.pth") == Path("sub/GPEN-BFR-512.pth")  # a path: as typed
    with pytest.raises(cli.CheckpointReadError, match=r"checkpoint not found: GPEN-BFR-1024\.pth is neither in the "
                                                       r"current folder nor in .*models/gpen; put the file there"):
        cli.resolve_model_path("GPEN-BFR-1024.pth")


def test_restores_a_folder_at_2x(tmp_path):
    inputs = tmp_path / "in"
    (inputs / "more").mkdir(parents=True)
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        shutil.copy(data_file("faces", name), inputs / name)
    cv2.imwrite(str(inputs / "more" / "wall.png"), np.full((40, 50), 90, np.uint8))  # a subfolder, no face
    out = run_cli(str(inputs), *common(tmp_path), "--scale", "2", "--save-crops")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("3 image(s): 2 restored, 1 unchanged, 0 skipped, 0 failed; faces: 2 found, 2 "
                                 "restored; ") and out.stdout.count("\n") == 1
    assert "no face in wall.png: saved at scale 2, nothing restored" in out.stderr and "[ WARN" not in out.stderr
    restored = cv2.imread(str(tmp_path / "out" / "astronaut.jpg"))
    assert restored.shape == (1024, 1024, 3)
    assert cv2.imread(str(tmp_path / "out" / "grace_hopper.jpg")).shape == (1200, 1024, 3)
    wall = cv2.imread(str(tmp_path / "out" / "more" / "wall.png"))
    assert wall.shape == (80, 100, 3) and (wall == 90).all()
    assert (tmp_path / "out" / "crops" / "grace_hopper.jpg_face0_restored.png").is_file()
    assert cv2.imread(str(tmp_path / "out" / "crops" / "astronaut.jpg_face0_aligned.png")).shape == (256, 256, 3)
    original = cv2.resize(cv2.imread(str(inputs / "astronaut.jpg")), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    face = np.abs(restored[300:480, 380:520].astype(float) - original[300:480, 380:520]).mean()
    corner = np.abs(restored[:150, 800:].astype(float) - original[:150, 800:]).mean()
    assert face > 8 and corner < 3  # the face is the (noise) restoration, the rest the upscaled photo


def test_video_frames_keep_names_and_order(tmp_path):
    photo = cv2.imread(str(data_file("faces", "grace_hopper.jpg")))
    inputs = tmp_path / "frames"
    inputs.mkdir()
    for i in range(3):
        cv2.imwrite(str(inputs / f"frame_{i:03d}.png"), np.roll(photo, 4 * i, axis=1))
    out = run_cli(str(inputs), *common(tmp_path), "--video-frames", "--strength", "0.5", "--dtype", "fp32")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("3 image(s): 3 restored, 0 unchanged, 0 skipped, 0 failed; faces: 3 found, 3 restored")
    for i in range(3):
        frame = cv2.imread(str(tmp_path / "out" / f"frame_{i:03d}.png"))
        assert frame.shape == photo.shape and not np.array_equal(frame, np.roll(photo, 4 * i, axis=1))


def test_missing_model_is_one_line(tmp_path):
    out = run_cli(str(data_file("faces", "astronaut.jpg")), "--model", str(tmp_path / "GPEN-BFR-512.pth"),
                  "--output", str(tmp_path / "out"))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: checkpoint not found")
    assert "Traceback" not in out.stderr and not (tmp_path / "out").exists()


@pytest.fixture()
def main():
    import cli

    return cli.main


def test_missing_detector_weights_offline(tmp_path, main, capsys):
    status = main([str(data_file("faces", "astronaut.jpg")), "--model", str(data_file(*MODEL_256)),
                   "--output", str(tmp_path / "o"), "--detector", "retinaface_resnet50", "--detector-dir",
                   str(tmp_path), "--no-download"])
    err = capsys.readouterr().err.strip()
    assert status == 1 and err.count("\n") == 0 and err.startswith("error: ")
    assert "detection_Resnet50_Final.pth" in err and str(tmp_path) in err and "https://" in err


def test_bad_input_is_status_2(tmp_path, main, capsys):
    model = str(data_file(*MODEL_256))
    assert main([str(tmp_path / "nothing.png"), "--model", model, "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: input not found: {tmp_path / 'nothing.png'}"
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--model", model, "--output", str(tmp_path / "o")]) == 2
    assert "error: no images (.png .jpg .jpeg .webp .bmp .tif .tiff) in" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    photo = str(shutil.copy(data_file("faces", "astronaut.jpg"), tmp_path / "in"))
    assert main([photo, "--model", model, "--output", str(tmp_path / "o"), "--strength", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: --strength must be a number in 0..1, got 1.5"
    assert main([photo, "--model", model, "--output", str(tmp_path / "in")]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["--model", "x.pth"])
    assert usage.value.code == 2
    assert capsys.readouterr().err == ("error: the following arguments are required: inputs, --output (python cli.py "
                                       "--help lists the options)\n")


def test_an_unreadable_image_is_skipped_and_reported(tmp_path, main, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "broken.jpg").write_bytes(b"not an image")
    cv2.imwrite(str(inputs / "plain.png"), np.full((30, 30, 3), 200, np.uint8))
    status = main([str(inputs), *common(tmp_path)])
    captured = capsys.readouterr()
    assert status == 2 and captured.out.startswith("2 image(s): 0 restored, 1 unchanged, 1 skipped, 0 failed")
    assert f"skipped {inputs / 'broken.jpg'}: broken.jpg is not a readable image" in captured.err
    assert (tmp_path / "out" / "plain.png").read_bytes() == (inputs / "plain.png").read_bytes()  # copied, no face
    assert not (tmp_path / "out" / "broken.jpg").exists()


def test_alpha_exif_and_icc_pass_through_and_faceless_images_are_copied(tmp_path, main, capsys, caplog):
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    photo = np.asarray(Image.open(data_file("faces", "grace_hopper.jpg")).convert("RGB"))
    alpha = np.tile(np.linspace(0, 255, photo.shape[1]).astype(np.uint8), (photo.shape[0], 1))
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.dstack([photo, alpha]), "RGBA").save(inputs / "face.png", exif=exif.tobytes(), icc_profile=icc)
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(inputs / "wall.jpg", exif=exif.tobytes(), quality=80)
    assert main([str(inputs), *common(tmp_path)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("2 image(s): 1 restored, 1 unchanged, 0 skipped, 0 failed")
    assert (tmp_path / "out" / "wall.jpg").read_bytes() == (inputs / "wall.jpg").read_bytes()  # not re-encoded
    with Image.open(tmp_path / "out" / "face.png") as restored:
        assert restored.mode == "RGBA" and np.array_equal(np.asarray(restored)[:, :, 3], alpha)
        assert restored.info.get("icc_profile") == icc and restored.getexif().get(0x010F) == "TestCam"
        assert np.abs(np.asarray(restored)[:, :, :3].astype(float) - photo).mean() > 1  # the face was restored
    status = main([str(inputs / "face.png"), *common(tmp_path)[:2], "--output", str(tmp_path / "face.jpg"),
                   *common(tmp_path)[4:]])
    assert status == 0 and "face.jpg: .jpg files cannot hold transparency; written without it" in caplog.text
    with Image.open(tmp_path / "face.jpg") as flat:
        assert flat.mode == "RGB" and flat.info.get("icc_profile") == icc


def test_black_and_white_photos_stay_black_and_white_and_video_frames_fill_gaps(tmp_path):
    photo = cv2.imread(str(data_file("faces", "grace_hopper.jpg")))
    gray = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    inputs = tmp_path / "frames"
    inputs.mkdir()
    for i in range(5):
        frame = np.roll(gray, 3 * i, axis=1)
        if i == 2:  # the face removed from the middle frame: filled in from its neighbours
            frame = frame.copy()
            frame[150:420, 160:360] = 128
        cv2.imwrite(str(inputs / f"frame_{i:03d}.png"), frame)
    out = run_cli(str(inputs), *common(tmp_path), "--video-frames", "--verbose")
    assert out.returncode == 0, out.stderr
    assert "5 image(s): 5 restored" in out.stdout and "1 face(s) missed by the detector filled in" in out.stderr
    for i in range(5):
        result = cv2.imread(str(tmp_path / "out" / f"frame_{i:03d}.png")).astype(int)
        assert (result.max(-1) - result.min(-1)).max() <= 1, i  # still black-and-white
    middle = cv2.imread(str(tmp_path / "out" / "frame_002.png")).astype(int)
    assert np.abs(middle[150:420, 160:360] - 128).mean() > 5  # a face was restored where the detector saw none
    coloured = run_cli(str(inputs / "frame_000.png"), *common(tmp_path), "--no-keep-gray", "--output",
                       str(tmp_path / "colour"))
    assert coloured.returncode == 0, coloured.stderr
    result = cv2.imread(str(tmp_path / "colour" / "frame_000.png")).astype(int)
    assert (result.max(-1) - result.min(-1)).max() > 5


def test_the_cli_runs_the_one_pipeline_assembly_with_the_records_of_its_flags(tmp_path, main, monkeypatch):
    """The flags become the stages' records, and a photo goes through ``Pipeline`` (find, then restore_and_paste)."""
    from face_pipeline.pipeline import (
        AlignOptions,
        DetectOptions,
        PasteOptions,
        PipelineOptions,
        RestoreOptions,
        VideoOptions,
    )

    calls = []
    real_find, real_restore_and_paste = Pipeline.find, Pipeline.restore_and_paste

    def find(self, images, **kwargs):
        calls.append(("find", self.options))
        return real_find(self, images, **kwargs)

    def restore_and_paste(self, images, faces, **kwargs):
        calls.append(("restore_and_paste", self.options))
        return real_restore_and_paste(self, images, faces, **kwargs)

    monkeypatch.setattr(Pipeline, "find", find)
    monkeypatch.setattr(Pipeline, "restore_and_paste", restore_and_paste)
    status = main([str(data_file("faces", "grace_hopper.jpg")), *common(tmp_path), "--strength", "0.5", "--mask",
                   "ellipse", "--feather", "0.2", "--scale", "2", "--max-faces", "1", "--template", "ffhq",
                   "--batch-size", "2", "--no-keep-gray", "--parsing-dir", str(tmp_path)])
    assert status == 0
    expected = PipelineOptions(
        detect=DetectOptions(max_faces=1), video=VideoOptions(), align=AlignOptions(template="ffhq"),
        restore=RestoreOptions(strength=0.5, batch_size=2),
        paste=PasteOptions(mask_type="ellipse", feather=0.2, scale=2, parsing_dir=str(tmp_path), keep_gray=False))
    assert calls == [("find", expected), ("restore_and_paste", expected)]
