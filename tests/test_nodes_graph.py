"""The nodes in real graphs (issue: a batch is not a video, Cancel within a face, ComfyUI's memory terms, gray stays
gray): with the ComfyUI test double, keyword arguments throughout."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
from conftest import DETECT, comfy_image, node

pytestmark = pytest.mark.usefixtures("like_comfyui")


def bridge():
    """The pack's comfy_bridge; its ``mm`` and ``comfy`` are the ComfyUI modules the pack really uses (another test
    module's fixture may have imported a fresh copy of the test double since)."""
    return sys.modules["comfyui-gpen-under-test.nodes.comfy_bridge"]


PASTE = dict(mask_type="rounded_rect", feather=0.1, color_correction=True, output_scale="1", max_output_size=8192)


@pytest.fixture(scope="module")
def two_photos():
    """Two unrelated photos of one size, as KSampler or ImageBatch would batch them."""
    return comfy_image("grace_hopper.jpg", size=(512, 448)), comfy_image("astronaut.jpg", size=(512, 448))


def all_in_one(pack, gpen_model, detector, image, **options):
    return node(pack, "GPENFaceRestore").run(image=image, gpen_model=gpen_model, face_detector=detector,
                                             select="all", strength=1.0, template="gpen", **PASTE, **options)


def step_by_step(pack, gpen_model, detector, image, **detect_options):
    faces, _crops, _count, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector,
                                                                 **{**DETECT, **detect_options})
    restored, _preview = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                                strength=1.0)
    return node(pack, "GPENPasteFaces").paste(image=image, faces=restored, **PASTE)


def test_a_batch_of_two_photos_gives_each_photo_its_own_pixels(pack, gpen_model, detector, two_photos):
    a, b = two_photos
    batch = torch.cat([a, b])
    alone = [all_in_one(pack, gpen_model, detector, x)[0] for x in (a, b)]
    together = all_in_one(pack, gpen_model, detector, batch)[0]
    assert not torch.equal(alone[0], a) and not torch.equal(alone[1], b)  # both were restored
    assert torch.equal(together, torch.cat(alone))
    steps = step_by_step(pack, gpen_model, detector, batch)[0]
    assert torch.equal(steps, torch.cat([step_by_step(pack, gpen_model, detector, x)[0] for x in (a, b)]))
    # video mode: the two photos are two scenes, so nothing is carried from one to the other
    video = all_in_one(pack, gpen_model, detector, batch, video=True)[0]
    assert torch.equal(video, torch.cat(alone))


def test_a_face_missed_in_a_video_frame_is_filled_in_and_restored(pack, gpen_model, detector):
    frame = comfy_image("grace_hopper.jpg", size=(512, 448))
    frames = torch.cat([frame.roll(2 * i, dims=2) for i in range(5)])  # a slow pan
    face = node(pack, "GPENDetectFaces").detect(image=frames[2:3], face_detector=detector, **DETECT)[0].faces[0]
    x1, y1, x2, y2 = (round(v) for v in face.box)
    frames[2, y1 - 10:y2 + 10, x1 - 10:x2 + 10] = 0.5  # the face removed from the middle frame
    faces, _, count, *_ = node(pack, "GPENDetectFaces").detect(image=frames, face_detector=detector,
                                                           **{**DETECT, "video_smoothing": 0.3})
    assert count == 5 and faces.image_indices == (0, 1, 2, 3, 4)
    assert [f.interpolated for f in faces.faces] == [False, False, True, False, False]
    single = node(pack, "GPENDetectFaces").detect(image=frames[2:3], face_detector=detector, **DETECT)
    assert single[2] == 0  # alone, frame 2 has no face
    restored, _ = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                         strength=1.0)
    out, mask = node(pack, "GPENPasteFaces").paste(image=frames, faces=restored, **PASTE)
    assert mask[2].amax() == 1 and not torch.equal(out[2], frames[2])  # restored there too
    gaps_off = node(pack, "GPENDetectFaces").detect(image=frames, face_detector=detector,
                                                    **{**DETECT, "video_smoothing": 0.3}, fill_gaps=0)
    assert gaps_off[2] == 4


class CountingModel(torch.nn.Module):
    """A stand-in GPEN-256 that counts its forwards (and faces) and can raise ComfyUI's Cancel after the first."""

    config = type("Config", (), {"size": 256})()

    def __init__(self, cancel_after: int | None = None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.forwards: list[int] = []
        self.cancel_after = cancel_after

    def forward(self, x):
        mm = bridge().mm
        self.forwards.append(x.shape[0])
        if self.cancel_after is not None and len(self.forwards) == self.cancel_after:
            mm.interrupt = True  # what pressing Cancel does, seen by the next check
        return x * self.weight


def counting_handle(model):
    handles = sys.modules["comfyui-gpen-under-test.nodes.handles"]
    patcher = bridge().comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"), size=4)
    return handles.GPENModelHandle(patcher=patcher, file_name="GPEN-BFR-256.pth", size=256, dtype=torch.float32)


@pytest.fixture(scope="module")
def sixteen_faces(pack, detector):
    with torch.inference_mode():
        frame = comfy_image("grace_hopper.jpg", size=(300, 256))
        faces, _, count, *_ = node(pack, "GPENDetectFaces").detect(image=frame.repeat(16, 1, 1, 1),
                                                               face_detector=detector, **DETECT)
    assert count == 16
    return faces


def test_cancel_stops_within_a_face_and_progress_moves_per_face(pack, sixteen_faces):
    mm, utils = bridge().mm, bridge().comfy.utils

    model = CountingModel(cancel_after=1)
    with pytest.raises(mm.InterruptProcessingException):
        node(pack, "GPENRestoreFaces").restore(gpen_model=counting_handle(model), faces=sixteen_faces,
                                               mode="restore", strength=1.0)
    assert model.forwards == [1]  # stopped before the second face, far before the third
    utils.updates.clear()
    model = CountingModel()
    node(pack, "GPENRestoreFaces").restore(gpen_model=counting_handle(model), faces=sixteen_faces, mode="restore",
                                           strength=1.0)
    assert model.forwards == [1] * 16
    assert utils.updates == [(i, 16) for i in range(1, 17)]  # one update per face


def test_memory_decisions_follow_comfyui(pack, sixteen_faces, monkeypatch):
    mm = bridge().mm

    from face_pipeline.restoration import RestoreOptions, auto_batch_size, bytes_per_face, restore_faces

    memory = bridge().MEMORY
    model = CountingModel()
    per_face = bytes_per_face(model, 256, torch.float32)
    gpu = torch.device("cuda")  # a stand-in: only the step size and the policy's answer are consulted
    monkeypatch.setattr(mm, "free_bytes", int(3 * per_face / 0.8) + 16)
    assert memory.free_bytes(gpu) == mm.free_bytes
    assert auto_batch_size(model, size=256, dtype=torch.float32, device=gpu, faces=16, memory=memory) == 3
    monkeypatch.setattr(mm, "free_bytes", 1)
    assert auto_batch_size(model, size=256, dtype=torch.float32, device=gpu, faces=16, memory=memory) == 1

    class OutOfMemoryAbove2(CountingModel):
        def forward(self, x):
            if x.shape[0] > 2:
                self.forwards.append(-x.shape[0])
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (stand-in)")
            return super().forward(x)

    before = mm.soft_empty_calls
    limited = OutOfMemoryAbove2()
    restore_faces(limited, sixteen_faces, options=RestoreOptions(batch_size=4), memory=memory)
    assert limited.forwards[:2] == [-4, 2] and sum(n for n in limited.forwards if n > 0) == 16
    assert mm.soft_empty_calls == before + 1  # the cache released through ComfyUI after the out-of-memory
    assert memory.is_oom(torch.cuda.OutOfMemoryError("x")) and not memory.is_oom(ValueError("x"))
    assert memory.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1"))


def test_paste_reserves_memory_and_falls_back_on_out_of_memory(pack, gpen_model, detector, two_photos,
                                                               monkeypatch):
    mm = bridge().mm

    budget = sys.modules[f"{pack[0].__name__}.face_pipeline.paste.budget"]  # the module the nodes use
    batch = torch.cat(two_photos)
    expected = all_in_one(pack, gpen_model, detector, batch)[0]
    real_paste = budget.paste_faces
    attempts = []

    def paste_one_image_at_a_time(faces, **kwargs):  # the device holds one image's paste, not two
        attempts.append(faces.num_images)
        if faces.num_images > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (stand-in)")
        return real_paste(faces, **kwargs)

    monkeypatch.setattr(budget, "paste_faces", paste_one_image_at_a_time)
    mm.free_calls.clear()
    out, mask, _count, *_ = all_in_one(pack, gpen_model, detector, batch)
    assert attempts == [2, 1, 1] and torch.equal(out, expected) and mask.shape == (2, 512, 448)
    (required, _device), = mm.free_calls  # ComfyUI was asked to make room for the paste first
    assert required >= 2 * 512 * 448 * 4 * 4

    def never_fits(faces, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes")

    monkeypatch.setattr(budget, "paste_faces", never_fits)
    with pytest.raises(sys.modules[f"{pack[0].__name__}.face_pipeline.errors"].PasteError,
                       match="not enough memory to paste even one 448x512 image on the CPU"):
        all_in_one(pack, gpen_model, detector, batch)


def test_the_detector_is_under_model_management_and_follows_its_network(pack):
    mm = bridge().mm

    handle = node(pack, "GPENLoadFaceDetector").load(detector="retinaface_mobile0.25", allow_download=False,
                                                     score_threshold=0.0)[0]
    assert handle.patcher is not None and handle.patcher.model is handle.detector.module
    image = comfy_image("grace_hopper.jpg")
    mm.load_calls.clear()
    _faces, _crops, count, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=handle, **DETECT)
    assert count == 1 and mm.load_calls[0][0] == [handle.patcher] and mm.load_calls[0][3] is True
    mm.unload_all_models()  # ComfyUI offloads it when another model needs the room
    assert handle.patcher in mm.unloaded
    assert node(pack, "GPENDetectFaces").detect(image=image, face_detector=handle, **DETECT)[2] == 1
    # wherever model management puts the network, detection follows it (meta stands in for another device)
    detector = handle.detector
    detector.module.to("meta")
    detector._follow_module()
    assert detector.device.type == "meta" and detector.model.mean_tensor.device.type == "meta"
    assert node(pack, "GPENLoadFaceDetector").load(detector="yunet_opencv", allow_download=False,
                                                   score_threshold=0.0)[0].patcher is None  # OpenCV: no network


def test_gray_stays_gray(pack, gpen_model, detector):
    photo = comfy_image("grace_hopper.jpg")
    gray = (photo * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True).expand_as(photo).contiguous()
    out, mask, count, *_ = all_in_one(pack, gpen_model, detector, gray)
    assert count == 1 and mask.amax() == 1
    assert (out.amax(-1) - out.amin(-1)).max() <= 1 / 255
    coloured = all_in_one(pack, gpen_model, detector, gray, keep_gray=False)[0]
    assert (coloured.amax(-1) - coloured.amin(-1)).max() > 0.02  # the model's faces are coloured otherwise


def test_checks_before_any_face_is_restored(pack, gpen_model, tmp_path):
    paste_node = pack[0].NODE_CLASS_MAPPINGS["GPENPasteFaces"]
    assert paste_node.VALIDATE_INPUTS(mask_type="rounded_rect") is True
    problem = paste_node.VALIDATE_INPUTS(mask_type="parsing")
    assert isinstance(problem, str) and "parsing_parsenet.pth" in problem
    assert "mask_type must be one of" in pack[0].NODE_CLASS_MAPPINGS["GPENFaceRestore"].VALIDATE_INPUTS(mask_type="x")
    faces = dataclasses.replace(pytest.importorskip("face_pipeline.types").FaceBatch(
        images=torch.zeros(1, 3, 8, 8), faces=(), crops=torch.zeros(0, 3, 256, 256),
        affines=torch.zeros(0, 2, 3, dtype=torch.float64), inverse_affines=torch.zeros(0, 2, 3, dtype=torch.float64),
        size=256, template="gpen"))
    with pytest.raises(ValueError, match="mode 'inpaint' needs the inpaint_mask input connected"):
        node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="inpaint", strength=1.0)


def test_mode_and_model_mismatch_is_a_warning(pack, gpen_model, sixteen_faces, caplog):
    colorizer = dataclasses.replace(counting_handle(CountingModel()), file_name="GPEN-Colorization-1024.pth")
    with caplog.at_level("WARNING"):
        node(pack, "GPENRestoreFaces").restore(gpen_model=colorizer, faces=sixteen_faces, mode="restore",
                                               strength=1.0)
    assert "looks like a model for 'colorize'" in caplog.text


def test_other_packs_files_are_not_listed(pack):
    module, models = pack
    torch.save({"conv_body_first.weight": torch.zeros(1), "stylegan_decoder.x": torch.zeros(1)},
               models / "facerestore_models" / "GFPGANv1.4.pth")
    try:
        files = module.NODE_CLASS_MAPPINGS["GPENLoadModel"].INPUT_TYPES()["required"]["model_name"][0]
        assert files == ["GPEN-test-256.pth"]
    finally:
        (models / "facerestore_models" / "GFPGANv1.4.pth").unlink()


def test_the_nodes_run_the_one_pipeline_assembly_with_the_records_of_their_inputs(pack, gpen_model, detector,
                                                                                monkeypatch):
    """All-in-one runs ``Pipeline.run``; the step nodes run its stages (detect_and_align, restore, paste), each with
    the records built from the node's inputs."""
    pipeline = sys.modules[f"{pack[0].__name__}.face_pipeline.pipeline"]  # the module the nodes use
    calls = []
    for stage in ("run", "detect_and_align", "restore", "paste"):
        real = getattr(pipeline.Pipeline, stage)

        def spy(self, *args, _real=real, _stage=stage, **kwargs):
            calls.append((_stage, self.options))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(pipeline.Pipeline, stage, spy)
    image = comfy_image("grace_hopper.jpg")
    all_in_one(pack, gpen_model, detector, image, video=True, keep_gray=False, rotations="none")
    assert [stage for stage, _ in calls] == ["run", "restore", "paste"]  # run calls its own stage methods
    options = calls[0][1]
    paste = pipeline.PasteOptions(parsing_dir=options.paste.parsing_dir, keep_gray=False)  # PASTE's values
    assert options == pipeline.PipelineOptions(
        detect=pipeline.DetectOptions(rotations="none"), video=pipeline.VideoOptions(track=True),
        restore=pipeline.RestoreOptions(strength=1.0), paste=paste)
    assert options.paste.parsing_dir.endswith("facedetection")
    calls.clear()
    step_by_step(pack, gpen_model, detector, image, select="largest", video_smoothing=0.5)
    assert [stage for stage, _ in calls] == ["detect_and_align", "restore", "paste"]
    detect, restore, paste_step = (options for _, options in calls)
    assert detect.detect == pipeline.DetectOptions(select="largest")
    assert detect.video == pipeline.VideoOptions(track=True, smoothing=0.5)
    assert restore.restore == pipeline.RestoreOptions(mode="restore", strength=1.0)
    assert paste_step.paste == paste.__class__(parsing_dir=paste.parsing_dir)
