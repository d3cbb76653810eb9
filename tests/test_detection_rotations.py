"""Faces on their side or upside down (detection/rotations.py) on the shared photos turned by 90, 180 and 270 degrees.

Measured with these photos: every detector misses Grace Hopper turned by 90 degrees (``rotations="none"`` finds
nothing). YuNet (kornia and OpenCV) sometimes calls a face upside down or on its side "upright" and makes its
landmarks up (astronaut at 90/180/270, Grace Hopper at 180), with a lower score than upright faces get:
``when_missing`` checks such a face on its crop turned by 90/180/270 degrees (``looks_turned``) and then looks at
every angle; ``always`` looks at every angle in every image and keeps the real sighting. RetinaFace finds some
rolled faces with rough landmarks, which ``when_missing`` recognises by their roll and replaces.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_file, require_shared

from face_pipeline.alignment import align_faces
from face_pipeline.detection import detect_faces, load_detector
from face_pipeline.detection.rotations import (
    apparent_roll,
    face_crop,
    looks_turned,
    merge_angles,
    unrotate_face,
    unrotate_points,
)
from face_pipeline.image import load_image
from face_pipeline.pipeline import PipelineOptions, run_pipeline
from face_pipeline.types import DetectedFace

SOLVAY = "solvay_conference_1927.png"


BACKENDS = ("retinaface_mobile0.25", "yunet_opencv", "yunet")  # the two that ship or are tested offline, and kornia's


@pytest.fixture(scope="module")
def detectors():
    return {name: load_detector(name, weights_dir=data_file("detectors")) for name in BACKENDS}


@pytest.fixture(scope="module")
def hopper():
    return load_image(data_file("faces", "grace_hopper.jpg"))  # [1, 3, 600, 512]


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_unrotate_points_inverts_rot90(angle):
    image = torch.zeros(1, 1, 7, 11)
    image[0, 0, 2, 9] = 1  # (x, y) = (9, 2)
    turned = torch.rot90(image, angle // 90, dims=(-2, -1))
    y, x = (int(v) for v in (turned[0, 0] == 1).nonzero()[0])
    assert unrotate_points(np.array([x, y]), angle, 7, 11).tolist() == [9.0, 2.0]


def test_unrotate_face_keeps_the_landmark_names_and_records_the_angle():
    face = DetectedFace(box=(10, 20, 50, 70), score=0.9, image_index=0,
                        landmarks=((20, 40), (40, 40), (30, 50), (22, 60), (38, 60)))
    back = unrotate_face(face, 90, 100, 200)  # found on the 200 x 100 image turned to 100 x 200
    assert back.rotation == 90 and back.score == 0.9
    assert back.box == (199 - 70, 10, 199 - 20, 50)
    assert back.landmarks[0] == (199 - 40, 20)  # the same eye, now lower down on the right
    assert apparent_roll(face) == 0 and abs(apparent_roll(back) - 90) < 1e-9
    with pytest.raises(ValueError, match="angle must be 0, 90, 180 or 270, got 45"):
        unrotate_face(face, 45, 100, 200)


def test_merge_prefers_the_upright_sighting_then_the_score():
    def at(x, score, rotation):
        return DetectedFace(box=(x, 0, x + 40, 40), score=score, image_index=0, rotation=rotation,
                            landmarks=((x + 10, 10), (x + 30, 10), (x + 20, 20), (x + 12, 30), (x + 28, 30)))

    rough, real, other = at(0, 0.99, 0), at(2, 0.9, 90), at(100, 0.8, 180)
    kept = merge_angles([(rough, 95.0), (real, 3.0), (other, 1.0)])
    assert kept == [real, other]
    assert merge_angles([(rough, 2.0), (real, 3.0)]) == [rough]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("angles", [(90, 180, 270)])
def test_a_turned_photo_gives_one_face_with_its_landmarks(detectors, hopper, backend, angles):
    detector = detectors[backend]
    upright = detector.detect(hopper)[0]
    assert len(upright) == 1
    reference = upright[0].landmarks_array()
    for angle in angles:
        turned = torch.rot90(hopper, angle // 90, dims=(-2, -1))
        faces = detect_faces(detector, turned, rotations="when_missing")[0]
        assert len(faces) == 1, (backend, angle, [f.box for f in faces])
        # found on the copy turned back upright; mapped into the turned photo, then through the turn to the upright
        assert faces[0].rotation == (360 - angle) % 360
        back = unrotate_points(faces[0].landmarks_array(), angle, *hopper.shape[-2:])
        assert np.abs(back - reference).max() < 3, (backend, angle)


@pytest.mark.parametrize("backend", ["retinaface_mobile0.25", "yunet_opencv"])
def test_without_rotations_a_face_on_its_side_is_missed(detectors, hopper, backend):
    turned = torch.rot90(hopper, 1, dims=(-2, -1))
    assert detect_faces(detectors[backend], turned, rotations="none") == [[]]
    assert detectors[backend].detect(turned) == [[]]


@pytest.mark.parametrize("backend", ["retinaface_mobile0.25", "yunet_opencv"])
def test_always_finds_the_real_face_at_every_angle(detectors, backend):
    # the astronaut: YuNet finds her upright at every angle with made-up landmarks (up to 48 px off), RetinaFace
    # with rough ones (up to 22 px); looking at all four angles gives the exact ones
    photo = load_image(require_shared("faces", "astronaut.png"))
    reference = detectors[backend].detect(photo)[0][0].landmarks_array()
    turned = torch.cat([torch.rot90(photo, k, dims=(-2, -1)) for k in (1, 2, 3)])  # square: one batch
    for k, faces in enumerate(detect_faces(detectors[backend], turned, rotations="always"), start=1):
        assert len(faces) == 1 and faces[0].image_index == k - 1
        back = unrotate_points(faces[0].landmarks_array(), 90 * k, 512, 512)
        assert np.abs(back - reference).max() < 3, (backend, 90 * k)


def test_the_aligned_crop_is_upright_and_not_mirrored(detectors, hopper):
    detector = detectors["retinaface_mobile0.25"]
    upright = align_faces(hopper, detector.detect(hopper)[0], size=256).crops
    for k in (1, 2, 3):
        turned = torch.rot90(hopper, k, dims=(-2, -1))
        crops = align_faces(turned, detect_faces(detector, turned)[0], size=256).crops
        assert (crops - upright).abs().mean() < 0.01, 90 * k  # the same crop, up to resampling
        assert (crops - upright.flip(-1)).abs().mean() > 0.05  # and not its mirror image


@pytest.mark.parametrize("backend", ["retinaface_mobile0.25", "yunet_opencv"])
def test_always_adds_no_duplicates_on_the_group_photo(detectors, backend):
    photo = load_image(require_shared("faces", SOLVAY))
    plain = detectors[backend].detect(photo)[0]
    assert len(plain) == 29
    assert detect_faces(detectors[backend], photo, rotations="always")[0] == plain


def test_when_missing_turns_only_the_images_without_faces(detectors, hopper):
    calls = []
    detector = detectors["yunet_opencv"]

    class Counting:
        sure_upright_score = detector.sure_upright_score

        def working_copy(self, images):
            return detector.working_copy(images)

        def detect(self, images, score_threshold=None):
            calls.append(tuple(images.shape))
            return detector.detect(images, score_threshold=score_threshold)

    frames = torch.cat([hopper, hopper.flip(-1), torch.zeros_like(hopper)])
    found = detect_faces(Counting(), frames, rotations="when_missing")
    assert [len(f) for f in found] == [1, 1, 0]
    assert calls == [(3, 3, 600, 512), (1, 3, 512, 600), (1, 3, 600, 512), (1, 3, 512, 600)]  # the black frame only
    with pytest.raises(ValueError, match="rotations must be one of none, when_missing, always; got 'sometimes'"):
        detect_faces(detector, hopper, rotations="sometimes")


def test_a_turned_face_is_restored_by_the_pipeline(detectors, hopper):
    class Gray(torch.nn.Module):
        config = type("Config", (), {"size": 256})()

        def forward(self, x):
            return torch.zeros_like(x)

    turned = torch.rot90(hopper, 1, dims=(-2, -1))
    options = PipelineOptions.of(color_correction=False)
    result, report = run_pipeline(turned, model=Gray(), detector=detectors["yunet_opencv"], options=options)
    assert report.faces_found == 1 and report.faces_restored == 1
    inside = result.mask[0] > 0.99
    assert inside.sum() > 100 * 100
    torch.testing.assert_close(result.images[0][:, inside], torch.full_like(result.images[0][:, inside], 0.5),
                               atol=0.02, rtol=0)  # the gray face, pasted over the turned face
    none, report = run_pipeline(turned, model=Gray(), detector=detectors["yunet_opencv"],
                                options=PipelineOptions.of(rotations="none"))
    assert report.faces_found == 0 and torch.equal(none.images, turned)
    with pytest.raises(ValueError, match="rotations must be one of none, when_missing, always; got 'yes'"):
        PipelineOptions.of(rotations="yes")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("photo", ["grace_hopper.jpg", "astronaut.jpg"])
def test_upside_down_faces_come_out_the_right_way_up_with_the_default(detectors, backend, photo):
    # YuNet finds both faces turned by 180 degrees as "upright" (landmarks made up the right way up, over the chin and
    # the forehead); the default must still give the landmarks of the real face, found on the copy turned back
    image = load_image(data_file("faces", photo))
    detector = detectors[backend]
    reference = detector.detect(image)[0][0].landmarks_array()
    turned = torch.rot90(image, 2, dims=(-2, -1))
    faces = detect_faces(detector, turned)[0]  # rotations="when_missing", the default
    assert len(faces) == 1 and faces[0].rotation == 180, (backend, photo, [(f.rotation, f.score) for f in faces])
    back = unrotate_points(faces[0].landmarks_array(), 180, *image.shape[-2:])
    assert np.abs(back - reference).max() < 3, (backend, photo)
    eyes, mouth = faces[0].landmarks_array()[:2].mean(0), faces[0].landmarks_array()[3:].mean(0)
    assert eyes[1] > mouth[1]  # in the turned photo the eyes are below the mouth: the crop will come out upright


@pytest.mark.parametrize("backend", BACKENDS)
def test_upright_photos_keep_their_detections_and_are_not_checked(detectors, backend):
    detector = detectors[backend]
    photos = [load_image(data_file("faces", name)) for name in ("grace_hopper.jpg", "astronaut.jpg")]
    photos.append(load_image(require_shared("faces", SOLVAY)))
    for photo in photos:
        plain = detect_faces(detector, photo, rotations="none")
        assert plain[0][0].score >= detector.sure_upright_score  # sure: no check, no cost
        assert detect_faces(detector, photo) == plain


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_check_tells_an_upright_face_from_an_upside_down_one(detectors, hopper, backend):
    # the check itself, also where the score alone would not call for it (an upright face must never look turned)
    detector = detectors[backend]
    turned = torch.rot90(hopper, 2, dims=(-2, -1))
    upright_face = detector.detect(hopper)[0][0]
    called_upright = unrotate_face(upright_face, 180, *hopper.shape[-2:])  # its box on the turned photo
    images = torch.cat([hopper, turned])
    assert looks_turned(detector, images, {0: upright_face, 1: called_upright}) == [1]
    crop = face_crop(hopper[0], upright_face.box)
    assert crop.shape == (3, 160, 160) and 0 <= float(crop.min()) and float(crop.max()) <= 1
