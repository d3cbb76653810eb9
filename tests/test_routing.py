"""Model routing (issue 25): with several models, each face is restored by the smallest model at least its size in
the output (``face_pipeline/restoration/routing.py``), batched per model, and pasted at its own side.

The models are the compact 256 and 512 vectors of tests/data (random weights: the faces are noise, but the two models
give different pixels, so a face restored by the wrong one is seen). Faces are given (``helpers.grid_faces``) so the
sizes are exact: their landmarks are the template's, so a face's aligned crop covers its box side exactly."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, data_file
from helpers import grid_faces

from face_pipeline.host import LibraryHost
from face_pipeline.paste import budget as paste_budget
from face_pipeline.pipeline import Pipeline, PipelineOptions
from face_pipeline.restoration import ModelSet, output_sides, route
from face_pipeline.restoration.routing import MAX_MODELS
from face_pipeline.types import DetectedFace
from gpen_arch import load_gpen_file

COMPACT = data_file("gpen", "compact")
SMALL_FILE = COMPACT / "compact_256_cm1_n0.0625_s64.safetensors"
LARGE_FILE = COMPACT / "compact_512_cm2_n0.0625_s64.safetensors"


@pytest.fixture(scope="module")
def small():
    return load_gpen_file(SMALL_FILE)


@pytest.fixture(scope="module")
def large():
    return load_gpen_file(LARGE_FILE)


def moved(face: DetectedFace, dx: float, dy: float, image: int = 0) -> DetectedFace:
    return dataclasses.replace(face, box=(face.box[0] + dx, face.box[1] + dy, face.box[2] + dx, face.box[3] + dy),
                               landmarks=tuple((x + dx, y + dy) for x, y in face.landmarks), image_index=image)


def group(image: int = 0) -> list[DetectedFace]:
    """One big face (its crop covers 320 px: the 512 model at scale 1) first, then two small ones (60 px: the 256
    model), far apart so their pastes never overlap."""
    big = grid_faces(image, count=1, side=320, spacing=0)[0]
    smalls = [moved(f, 0, 0, image) for f in grid_faces(image, count=2, side=60, spacing=120)]
    return [moved(big, 380, 40, image), smalls[0], moved(smalls[1], 0, 200, image)]


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(3)
    return torch.rand(1, 3, 420, 760)


def test_route_gives_each_side_the_smallest_sufficient_model():
    assert route([100, 256, 257, 512, 900], [512, 256], "smallest_sufficient") == (256, 256, 512, 512, 512)
    assert route([100, 900], [256, 512], "largest") == (512, 512)
    with pytest.raises(ValueError, match="unknown model routing 'tiny'"):
        route([1], [256], "tiny")


def test_a_set_is_sorted_by_size_and_refuses_two_models_of_one_size(small, large):
    models = ModelSet(models=(large, small), names=("big.pth", "small.pth"))
    assert models.sizes == (256, 512) and models.names == ("small.pth", "big.pth") and models.largest is large
    with pytest.raises(ValueError, match=r"must differ in size .* a\.pth, b\.pth are all 256"):
        ModelSet(models=(small, small), names=("a.pth", "b.pth"))
    with pytest.raises(ValueError, match=f"1 to {MAX_MODELS} models"):
        ModelSet(models=())


def test_output_sides_follow_the_crop_and_the_scale(image, large):
    pipeline = Pipeline(model=large)
    batch = pipeline.align(image, [group()])
    sides = output_sides(batch.affines, size=batch.size, scale=1)
    assert sides == pytest.approx([320, 60, 60])
    assert output_sides(batch.affines, size=batch.size, scale=2) == pytest.approx([2 * s for s in sides])
    # the side does not depend on the crop size the matrices were made for
    assert output_sides(pipeline.align(image, [group()], size=256).affines, size=256, scale=1) == pytest.approx(sides)


def test_faces_go_to_the_model_of_their_size_in_the_face_records(image, small, large):
    models = ModelSet(models=(small, large), names=("GPEN-small-256.pth", "GPEN-large-512.pth"))
    pipeline = Pipeline(model=models, options=PipelineOptions.of(scale=1))
    choices = pipeline.given(image, [group()])
    faces = pipeline.face_models(image, choices)
    assert [faces[f] for f in group()] == [(512, "GPEN-large-512.pth"), (256, "GPEN-small-256.pth"),
                                           (256, "GPEN-small-256.pth")]
    # the output scale counts: an 80 px face is 256's at scale 1 and 2, 512's at 4 (320 output pixels), while the
    # 60 px faces still fit 256 (240)
    faces = [*group(), moved(grid_faces(0, count=1, side=80, spacing=0)[0], 150, 300)]
    assert Pipeline(model=models, options=PipelineOptions.of(scale=2)).model_sizes(image, faces) == (512, 256, 256,
                                                                                                      256)
    assert Pipeline(model=models, options=PipelineOptions.of(scale=4)).model_sizes(image, faces) == (512, 256, 256,
                                                                                                      512)
    largest = Pipeline(model=models, options=PipelineOptions.of(scale=1, model_routing="largest"))
    assert largest.model_sizes(image, group()) == (512, 512, 512)


def test_a_mixed_batch_restores_each_face_as_its_model_alone(image, small, large):
    options = PipelineOptions.of(scale=1, batch_size=4)  # up to 4 faces per forward (the CPU's default is 1)
    routed = Pipeline(model=ModelSet(models=(small, large)), options=options)
    seen = []
    result, batch = routed.restore_and_paste(image, [group()], keep_faces=True,
                                             on_restored=lambda step: seen.append(step.size))
    assert batch is not None and batch.face_sizes == (512, 256, 256)
    assert seen == [512, 256]  # steps of one model: the two small faces restored together, by the 256 model
    alone = {}
    for model, members in ((large, [0]), (small, [1, 2])):
        _, own = Pipeline(model=model, options=options).restore_and_paste(
            image, [[group()[i] for i in members]], keep_faces=True)
        assert own is not None
        side = own.size
        for k, i in enumerate(members):
            assert torch.equal(batch.restored[i, :, :side, :side], own.restored[k])
            assert torch.equal(batch.crops[i, :, :side, :side], own.crops[k])
            assert not batch.restored[i, :, side:].any() and not batch.restored[i, :, :, side:].any()
        alone[side] = own
    # pasted: the faces lie apart, so the big face pasted by the 512 model onto the small faces pasted by the 256
    # model is the routed image, bit for bit
    first, _ = Pipeline(model=small, options=options).restore_and_paste(image, [group()[1:]])
    both, _ = Pipeline(model=large, options=options).restore_and_paste(image, [group()[:1]], background=first.images)
    assert torch.equal(result.images, both.images)


def test_largest_gives_one_models_bytes_and_a_portrait_goes_to_the_largest(image, small, large):
    one, _ = Pipeline(model=large, options=PipelineOptions.of(scale=1)).restore_and_paste(image, [group()])
    largest = PipelineOptions.of(scale=1, model_routing="largest")
    routed, _ = Pipeline(model=ModelSet(models=(small, large)), options=largest).restore_and_paste(image, [group()])
    assert torch.equal(one.images, routed.images)
    portrait = group()[:1]  # one big face: the 512 model, as alone
    one, _ = Pipeline(model=large, options=PipelineOptions.of(scale=1)).restore_and_paste(image, [portrait])
    routed, batch = Pipeline(model=ModelSet(models=(small, large)),
                             options=PipelineOptions.of(scale=1)).restore_and_paste(image, [portrait], keep_faces=True)
    assert batch is not None and batch.face_sizes is None and torch.equal(one.images, routed.images)


def test_the_step_stages_route_as_the_stream(image, small, large):
    options = PipelineOptions.of(scale=1)
    pipeline = Pipeline(model=ModelSet(models=(small, large)), options=options)
    streamed, kept = pipeline.restore_and_paste(image, [group()], keep_faces=True)
    restored = pipeline.restore(pipeline.align(image, [group()]))  # Detect -> Restore -> Paste as the nodes run it
    assert kept is not None and restored.face_sizes == kept.face_sizes == (512, 256, 256)
    assert torch.equal(restored.restored_faces(), kept.restored_faces())
    assert torch.equal(pipeline.paste(restored).images, streamed.images)


def test_a_batch_of_images_with_auto_scale_and_a_paste_fallback(small, large, monkeypatch):
    torch.manual_seed(4)
    images = torch.rand(2, 3, 420, 760)
    faces = [group(0), group(1)[1:]]
    options = PipelineOptions.of(scale="auto")
    pipeline = Pipeline(model=ModelSet(models=(small, large)), options=options)
    expected, _ = pipeline.restore_and_paste(images, faces)
    assert expected.scale == Pipeline(model=large, options=options).restore_and_paste(images, faces)[0].scale
    real, calls = paste_budget.paste_faces, []

    def out_of_memory_once(batch, **kwargs):
        calls.append(batch.num_images)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return real(batch, **kwargs)

    monkeypatch.setattr(paste_budget, "paste_faces", out_of_memory_once)
    again, _ = pipeline.restore_and_paste(images, faces)
    assert calls == [2, 1, 1] and torch.equal(again.images, expected.images)  # image by image, the same bytes


def test_progress_and_cancel_span_every_model(image, small, large):
    progress = []
    host = LibraryHost(on_progress=lambda done, total: progress.append((done, total)))
    Pipeline(model=ModelSet(models=(small, large)), options=PipelineOptions.of(scale=1),
             host=host).restore_and_paste(image, [group()])
    assert progress[-1] == (3, 3) and [d for d, _ in progress] == sorted(d for d, _ in progress)

    class Cancelled(Exception):
        pass

    calls = []

    def cancel_on_the_second_model():
        calls.append(1)
        if len(calls) > 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        Pipeline(model=ModelSet(models=(small, large)), options=PipelineOptions.of(scale=1),
                 host=LibraryHost(interrupt=cancel_on_the_second_model)).restore_and_paste(image, [group()])


def test_sets_are_for_restore_mode_only(small, large):
    with pytest.raises(ValueError, match="several models are for restore mode only"):
        Pipeline(model=ModelSet(models=(small, large)), options=PipelineOptions.of(mode="colorize"))


# ---------------------------------------------------------------------------------------------------- the CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO_ROOT)


def test_the_cli_routes_with_model_given_twice(tmp_path):
    photo = data_file("faces", "astronaut.jpg")
    out = tmp_path / "out"
    done = _cli(str(photo), "--model", str(SMALL_FILE), "--model", str(LARGE_FILE), "--output", str(out),
                "--save-json", "--detector-dir", str(data_file("detectors")), "--no-download", "--scale", "2")
    assert done.returncode == 0, done.stderr
    (record,) = json.loads((out / "faces.json").read_text())["images"]
    (face,) = [f for f in record["faces"] if f["status"] == "restored"]
    # the astronaut's face is 90 px wide in a 512 px photo: at output scale 2 its crop covers more than 256 pixels
    assert (face["model_size"], face["model"]) == (512, LARGE_FILE.name)
    single = tmp_path / "single"
    assert _cli(str(photo), "--model", str(LARGE_FILE), "--output", str(single), "--detector-dir",
                str(data_file("detectors")), "--no-download", "--scale", "2").returncode == 0
    assert (out / "astronaut.jpg").read_bytes() == (single / "astronaut.jpg").read_bytes()  # a portrait: as 512 alone


def test_the_cli_refuses_a_set_it_cannot_route(tmp_path):
    photo = str(data_file("faces", "astronaut.jpg"))
    twice = _cli(photo, "--model", str(SMALL_FILE), "--model", str(SMALL_FILE), "--output", str(tmp_path / "a"),
                 "--detector-dir", str(data_file("detectors")))
    assert twice.returncode != 0 and "must differ in size" in twice.stderr
    colorize = _cli(photo, "--model", str(SMALL_FILE), "--model", str(LARGE_FILE), "--mode", "colorize",
                    "--output", str(tmp_path / "b"), "--detector-dir", str(data_file("detectors")))
    assert colorize.returncode != 0 and "is for --mode restore" in colorize.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
