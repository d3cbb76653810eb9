"""Every node on real tensors, with the ComfyUI test double (tests/comfy_double) in place of ComfyUI."""

from __future__ import annotations

import inspect
import os
import shutil
import sys

import pytest
import torch
from conftest import DETECT, REPO_ROOT, comfy_image, node

pytestmark = pytest.mark.usefixtures("like_comfyui")


def test_mappings_and_prefixes(pack):
    module = pack[0]
    assert set(module.NODE_CLASS_MAPPINGS) == set(module.NODE_DISPLAY_NAME_MAPPINGS)
    assert all(k.startswith("GPEN") for k in module.NODE_CLASS_MAPPINGS)
    assert len(module.NODE_CLASS_MAPPINGS) == 8
    assert module.NODE_DISPLAY_NAME_MAPPINGS["GPENModelSet"] == "GPEN Model Set"


def test_every_node_is_documented_and_consistent(pack):
    for name, cls in pack[0].NODE_CLASS_MAPPINGS.items():
        assert cls.DESCRIPTION and len(cls.DESCRIPTION) > 40, name
        spec = cls.INPUT_TYPES()
        inputs = {**spec.get("required", {}), **spec.get("optional", {})}
        for input_name, (_kind, *options) in inputs.items():
            assert options and options[0].get("tooltip"), f"{name}.{input_name} has no tooltip"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES), name
        assert all(cls.OUTPUT_TOOLTIPS), name
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        # the option inputs may come as **options (``nodes/inputs.py`` builds the records from them)
        names = [p for p, param in params.items() if p != "self" and param.kind != param.VAR_KEYWORD]
        takes_options = any(param.kind == param.VAR_KEYWORD for param in params.values())
        assert set(names) <= set(inputs) and (takes_options or set(names) == set(inputs)), \
            f"{name}: {names} vs {sorted(inputs)}"
        optional = set(spec.get("optional", {}))
        assert all(params[p].default is not inspect.Parameter.empty for p in optional & set(names)), name


def test_model_folders_and_list(pack):
    import folder_paths

    module, models = pack
    assert folder_paths.get_folder_paths("gpen")[0] == str(models / "gpen")
    assert "facerestore_models" in folder_paths.folder_names_and_paths
    files = module.NODE_CLASS_MAPPINGS["GPENLoadModel"].INPUT_TYPES()["required"]["model_name"][0]
    assert files == ["GPEN-test-256.pth"]  # notes.txt is not offered


def test_user_paths_are_kept(pack):
    import folder_paths

    module, models = pack
    user = "/somewhere/else/gpen"
    folder_paths.folder_names_and_paths["gpen"][0].insert(0, user)
    shared = folder_paths.supported_pt_extensions  # another pack registered facerestore_models with ComfyUI's set
    before = set(shared)
    saved = folder_paths.folder_names_and_paths["facerestore_models"]
    folder_paths.folder_names_and_paths["facerestore_models"] = (["/reactor/facerestore_models"], shared)
    try:
        module.nodes.comfy_bridge.register_model_folders()
        assert folder_paths.get_folder_paths("gpen") == [user, str(models / "gpen")]
        assert folder_paths.get_folder_paths("facerestore_models") == [
            "/reactor/facerestore_models", str(models / "facerestore_models")]
        assert shared == before  # not grown in place
        assert ".safetensors" in folder_paths.folder_names_and_paths["facerestore_models"][1]
    finally:
        folder_paths.folder_names_and_paths["gpen"][0].remove(user)
        folder_paths.folder_names_and_paths["facerestore_models"] = saved


def test_load_model(pack, gpen_model):
    assert gpen_model.size == 256 and gpen_model.dtype == torch.float32
    assert gpen_model.patcher.model.config.size == 256
    with pytest.raises(FileNotFoundError, match="GPEN model 'missing.pth' not found in .*gpen"):
        node(pack, "GPENLoadModel").load(model_name="missing.pth", precision="auto")


def test_non_gpen_file_is_a_clear_error(pack):
    module, models = pack
    torch.save({"conv_body_first.weight": torch.zeros(1), "stylegan_decoder.x": torch.zeros(1)},
               models / "gpen" / "GFPGANv1.4.pth")
    try:
        with pytest.raises(Exception, match="this looks like a GFPGAN"):
            node(pack, "GPENLoadModel").load(model_name="GFPGANv1.4.pth", precision="fp32")
    finally:
        os.remove(models / "gpen" / "GFPGANv1.4.pth")


def test_cuda_graphs_option_reaches_the_model(pack):
    loader = node(pack, "GPENLoadModel")
    assert "cuda_graphs" in loader.INPUT_TYPES()["optional"]
    assert loader.load(model_name="GPEN-test-256.pth", precision="fp32",
                       cuda_graphs=True)[0].patcher.model.fast_options.cuda_graphs is True
    assert loader.load(model_name="GPEN-test-256.pth",
                       precision="fp32")[0].patcher.model.fast_options.cuda_graphs is False  # old prompts: off


def test_precision_choices(pack):
    model = node(pack, "GPENLoadModel").load(model_name="GPEN-test-256.pth", precision="bf16")[0]
    assert model.dtype == torch.bfloat16
    assert model.patcher.model.final_linear[0].weight.dtype == torch.bfloat16


def test_detector_max_side_reaches_the_detector(pack):
    handle = node(pack, "GPENLoadFaceDetector").load(detector="yunet_opencv", allow_download=False,
                                                     score_threshold=0.0, max_side=3840)[0]
    assert handle.detector.max_side == 3840
    assert node(pack, "GPENLoadFaceDetector").load(detector="yunet_opencv", allow_download=False, score_threshold=0.0,
                                                   max_side=0)[0].detector.max_side is None


def test_the_default_detector_works_offline(pack):
    """No detector file in models/facedetection, downloads off: the default detector runs from the pack's copy."""
    module, models = pack
    default = module.NODE_CLASS_MAPPINGS["GPENLoadFaceDetector"].INPUT_TYPES()["required"]["detector"][1]["default"]
    assert default == "yunet_opencv" and not (models / "facedetection" / "face_detection_yunet_2023mar.onnx").exists()
    handle = node(pack, "GPENLoadFaceDetector").load(detector=default, allow_download=False, score_threshold=0.0)[0]
    faces = handle.detector.detect(comfy_image("grace_hopper.jpg").permute(0, 3, 1, 2))
    assert [len(f) for f in faces] == [1]


def test_detector_missing_weights_without_download(pack):
    with pytest.raises(Exception, match="detection_Resnet50_Final.pth, which is not in"):
        node(pack, "GPENLoadFaceDetector").load(detector="retinaface_resnet50", allow_download=False,
                                                score_threshold=0.0)


def test_detect_restore_paste_chain(pack, gpen_model, detector):
    import comfy.model_management as mm
    import comfy.utils

    image = comfy_image("grace_hopper.jpg")
    faces, crops, count, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, select="all",
                                                                   indices="0", sort_by="area", min_face_size=0,
                                                                   max_faces=0, template="gpen", crop_size="512",
                                                                   video_smoothing=0.3)
    assert count == 1 and crops.shape == (1, 512, 512, 3)
    mm.load_calls.clear()
    comfy.utils.updates.clear()
    restored, preview = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                               strength=1.0)
    assert preview.shape == (1, 256, 256, 3)  # re-cropped at the model's size
    (patchers, required, minimum, full), = mm.load_calls
    assert patchers == [gpen_model.patcher] and full is True
    one_face = gpen_model.patcher.model.estimate_memory(1, torch.float32)
    io = 2 * 3 * 256 * 256 * (4 + 4)  # the input and output of one face, in the model's dtype and in float32
    assert required == minimum == one_face + io  # one face: its activations and I/O
    assert comfy.utils.updates[-1] == (1, 1)
    out, mask = node(pack, "GPENPasteFaces").paste(image=image, faces=restored, mask_type="rounded_rect", feather=0.1,
                                                   color_correction=True, output_scale="2", max_output_size=8192)
    assert out.shape == (1, 1200, 1024, 3) and mask.shape == (1, 1200, 1024)
    assert 0 < mask.mean().item() < 0.5
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_all_in_one_on_a_batch_with_alpha(pack, gpen_model, detector):
    image = comfy_image("astronaut.jpg")
    alpha = torch.linspace(0, 1, 512).expand(1, 512, 512)[..., None]  # transparent on the left, opaque on the right
    rgba = torch.cat([image, alpha], dim=-1)  # a 4-channel IMAGE: the alpha is kept
    batch = torch.cat([rgba, rgba.flip(2)])
    out, mask, count, *_ = node(pack, "GPENFaceRestore").run(image=batch, gpen_model=gpen_model,
                                                             face_detector=detector, select="all", strength=1.0,
                                                             template="gpen", mask_type="ellipse", feather=0.1,
                                                             color_correction=True, output_scale="1",
                                                             max_output_size=8192)
    assert count == 2 and out.shape == (2, 512, 512, 4) and mask.shape == (2, 512, 512)
    assert torch.equal(out[..., 3], batch[..., 3])
    away = mask[0] == 0
    assert torch.allclose(out[0][away], rgba[0][away], atol=1e-6)


def test_all_in_one_preset_official_rect_replaces_the_paste_widgets(pack, gpen_model, detector):
    """The preset's values replace the paste widgets (here: ellipse, colour correction, 2x), not strength."""
    image = comfy_image("astronaut.jpg")
    widgets = dict(image=image, gpen_model=gpen_model, face_detector=detector, select="all", strength=1.0,
                   template="gpen", mask_type="ellipse", feather=0.1, color_correction=True, output_scale="2",
                   max_output_size=8192)
    out, mask, count, *_ = node(pack, "GPENFaceRestore").run(**widgets, preset="official_rect")
    assert count == 1 and out.shape == (1, 512, 512, 3)  # scale 1: the preset's
    plain, *_ = node(pack, "GPENFaceRestore").run(**{**widgets, "mask_type": "rect_official",
                                                     "color_correction": False, "output_scale": "1"})
    assert not torch.equal(out, plain)  # the preset also set the official warps and 8-bit steps
    assert (out * 255 - (out * 255).round()).abs().max() < 1e-4  # its blend is rounded to 8-bit levels


def test_no_face_returns_unchanged_images(pack, gpen_model, detector):
    image = torch.full((2, 64, 96, 3), 0.5)
    faces, crops, count, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, **DETECT)
    assert count == 0 and crops.shape == (1, 256, 256, 3)
    restored, _ = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                         strength=1.0)
    out, mask = node(pack, "GPENPasteFaces").paste(image=image, faces=restored, mask_type="rounded_rect", feather=0.1,
                                                   color_correction=True, output_scale="1", max_output_size=8192)
    assert torch.equal(out, image) and mask.sum() == 0


def test_faces_pasted_onto_another_image_is_an_error(pack, gpen_model, detector):
    image = comfy_image("grace_hopper.jpg")
    faces, _, _, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, select="largest",
                                                           indices="0", sort_by="area", min_face_size=0, max_faces=0,
                                                           template="gpen", crop_size="256", video_smoothing=0.0)
    restored, _ = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                         strength=1.0)
    other = comfy_image("astronaut.jpg")
    with pytest.raises(ValueError, match="these faces were detected on a batch of 1 images of 512x600"):
        node(pack, "GPENPasteFaces").paste(image=other, faces=restored, mask_type="rounded_rect", feather=0.1,
                                           color_correction=True, output_scale="1", max_output_size=8192)


def test_options_take_effect_on_the_next_run(pack, gpen_model, detector):
    image = comfy_image("grace_hopper.jpg")

    def detect(image, face_detector, **options):  # ComfyUI passes every input by name
        return node(pack, "GPENDetectFaces").detect(image=image, face_detector=face_detector,
                                                    **{**DETECT, "crop_size": "256", **options})

    _, crops_gpen, _, *_ = detect(image, detector, template="gpen")
    _, crops_ffhq, _, *_ = detect(image, detector, template="ffhq")
    assert not torch.allclose(crops_gpen, crops_ffhq)
    faces, _, count, *_ = detect(image, detector, min_face_size=10_000)
    assert count == 0  # min_face_size applied
    strict = node(pack, "GPENLoadFaceDetector").load(detector="yunet_opencv", allow_download=False,
                                                     score_threshold=0.999)[0]
    _, _, count, *_ = detect(image, strict)
    assert count == 0


def test_cancel_stops_restoration(pack, gpen_model, detector):
    import comfy.model_management as mm

    image = comfy_image("grace_hopper.jpg")
    faces, _, _, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, select="all",
                                                           indices="0", sort_by="area", min_face_size=0, max_faces=0,
                                                           template="gpen", crop_size="256", video_smoothing=0.0)
    mm.interrupt = True
    with pytest.raises(mm.InterruptProcessingException):
        node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore", strength=1.0)
    assert mm.interrupt is False


def test_root_init_is_harmless_outside_comfyui():
    import subprocess

    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('pack', "
            f"{str(REPO_ROOT / '__init__.py')!r}, submodule_search_locations=[{str(REPO_ROOT)!r}]); "
            "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m); "
            "print(len(m.NODE_CLASS_MAPPINGS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_strength_zero_gives_back_the_aligned_crops(pack, gpen_model, detector):
    image = comfy_image("grace_hopper.jpg")
    faces, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, **DETECT)
    _, original = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                         strength=0.0)
    _, restored = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                         strength=1.0)
    crops = faces.crops.permute(0, 2, 3, 1)
    assert torch.allclose(original, crops, atol=1e-6)
    assert (restored - crops).abs().mean() > 0.05  # strength 1 really changed them


def test_colorize_and_inpaint_modes(pack, gpen_model, detector):
    from face_pipeline.restoration.modes import luma

    image = comfy_image("astronaut.jpg")
    faces, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, **DETECT)
    _, colored = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="colorize",
                                                        strength=1.0)
    inside = (colored > 0.01) & (colored < 0.99)  # where no channel was clamped, the photo's luminance is kept
    same = (luma(colored.permute(0, 3, 1, 2)) - luma(faces.crops)).abs()[:, 0]
    assert same[inside.all(-1)].max() < 1e-4
    with pytest.raises(ValueError, match="mode 'inpaint' needs the inpaint_mask input connected"):
        node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="inpaint", strength=1.0)
    mask = torch.zeros((1, 512, 512))
    mask[:, 200:260, 200:260] = 1
    _, painted = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="inpaint",
                                                        strength=1.0, inpaint_mask=mask)
    assert painted.shape == (1, 256, 256, 3) and torch.isfinite(painted).all()


def test_background_is_used_outside_the_faces(pack, gpen_model, detector):
    image = comfy_image("astronaut.jpg")
    background = torch.zeros((1, 1024, 1024, 3))
    background[..., 2] = 1.0  # blue, at the output size (2x)
    faces, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, **DETECT)
    restored, _ = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                         strength=1.0)
    out, mask = node(pack, "GPENPasteFaces").paste(image=image, faces=restored, mask_type="ellipse", feather=0.1,
                                                   color_correction=True, output_scale="2", max_output_size=8192,
                                                   background=background)
    assert out.shape == (1, 1024, 1024, 3)
    away = mask[0] == 0
    assert torch.equal(out[0][away], background[0][away])


def test_all_in_one_on_frames_without_faces_is_unchanged(pack, gpen_model, detector):
    import comfy.model_management as mm

    frames = torch.rand((3, 96, 128, 3), generator=torch.Generator().manual_seed(0))
    mm.load_calls.clear()
    out, mask, count, *_ = node(pack, "GPENFaceRestore").run(image=frames, gpen_model=gpen_model,
                                                             face_detector=detector, select="all", strength=1.0,
                                                             template="gpen", mask_type="rounded_rect", feather=0.1,
                                                             color_correction=True, output_scale="1",
                                                             max_output_size=8192)
    assert count == 0 and torch.equal(out, frames) and mask.sum() == 0
    assert mm.load_calls == []  # no face: the model is not loaded onto the device for nothing


def test_video_frames_are_tracked(pack, detector):
    frame = comfy_image("astronaut.jpg")
    frames = torch.cat([frame, frame.roll(4, dims=2), frame.roll(8, dims=2)])
    faces, crops, count, *_ = node(pack, "GPENDetectFaces").detect(image=frames, face_detector=detector, select="all",
                                                                   indices="0", sort_by="area", min_face_size=0,
                                                                   max_faces=0, template="gpen", crop_size="256",
                                                                   video_smoothing=0.5)
    assert count == 3 and crops.shape == (3, 256, 256, 3)
    assert faces.image_indices == (0, 1, 2) and len({f.track_id for f in faces.faces}) == 1


def test_restore_faces_smooths_video_frames_over_time_and_leaves_photos_alone(pack, gpen_model, detector):
    """Restore Faces' temporal_smoothing (issue 25): faces tracked by Detect Faces are smoothed along their track
    (the first frame as restored alone) with the colour references Paste Faces matches; an older prompt without the
    input gets the default (on); faces without track ids are not touched. The all-in-one likewise with video on."""
    frame = comfy_image("astronaut.jpg")
    frames = torch.cat([frame, frame.roll(4, dims=2), frame.roll(8, dims=2)])
    detect = {"face_detector": detector, "select": "all", "indices": "0", "sort_by": "area", "min_face_size": 0,
              "max_faces": 0, "template": "gpen", "crop_size": "256"}
    tracked = node(pack, "GPENDetectFaces").detect(image=frames, video_smoothing=0.5, **detect)[0]
    restore = node(pack, "GPENRestoreFaces")
    alone = restore.restore(gpen_model=gpen_model, faces=tracked, mode="restore", strength=1.0,
                            temporal_smoothing=0.0)[0]
    smoothed = restore.restore(gpen_model=gpen_model, faces=tracked, mode="restore", strength=1.0)[0]
    assert alone.color_reference is None and smoothed.color_reference.shape == (3, 3, 128, 128)
    assert torch.equal(smoothed.restored[0], alone.restored[0])
    assert not torch.equal(smoothed.restored[1:], alone.restored[1:])
    photos = node(pack, "GPENDetectFaces").detect(image=frames, video_smoothing=0.0, **detect)[0]
    plain = restore.restore(gpen_model=gpen_model, faces=photos, mode="restore", strength=1.0,
                            temporal_smoothing=1.0)[0]
    assert plain.color_reference is None and torch.equal(plain.restored, restore.restore(
        gpen_model=gpen_model, faces=photos, mode="restore", strength=1.0, temporal_smoothing=0.0)[0].restored)
    paste = {"mask_type": "rounded_rect", "feather": 0.1, "color_correction": True, "output_scale": "1",
             "max_output_size": 8192}
    pasted = node(pack, "GPENPasteFaces").paste(image=frames, faces=smoothed, **paste)[0]
    assert torch.equal(pasted[0], node(pack, "GPENPasteFaces").paste(image=frames, faces=alone, **paste)[0][0])
    one = {"image": frames, "gpen_model": gpen_model, "face_detector": detector, "select": "all", "strength": 1.0,
           "template": "gpen", "video": True, **paste}
    off = node(pack, "GPENFaceRestore").run(**one, temporal_smoothing=0.0)[0]
    on = node(pack, "GPENFaceRestore").run(**one)[0]
    assert torch.equal(on[0], off[0]) and not torch.equal(on[1:], off[1:])


def test_bad_indices_and_a_replaced_model_file(pack):
    image = comfy_image("grace_hopper.jpg")
    detector = node(pack, "GPENLoadFaceDetector").load(detector="yunet_opencv", allow_download=False,
                                                       score_threshold=0.0)[0]
    with pytest.raises(ValueError, match="face indices must look like .0,2. or .0-3."):
        node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, select="indices", indices="two",
                                             sort_by="area", min_face_size=0, max_faces=0, template="gpen",
                                             crop_size="256", video_smoothing=0.0)
    module, models = pack
    loader = module.NODE_CLASS_MAPPINGS["GPENLoadModel"]
    before = loader.IS_CHANGED(model_name="GPEN-test-256.pth", precision="auto")
    path = models / "gpen" / "GPEN-test-256.pth"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert loader.IS_CHANGED(model_name="GPEN-test-256.pth", precision="auto") != before
    assert loader.IS_CHANGED(model_name="missing.pth", precision="auto") == ""


def test_onnx_gpen_files_are_listed_and_load(pack):
    """A ReActor user's GPEN-BFR-*.onnx in models/facerestore_models is offered and loads into our network."""
    onnx = pytest.importorskip("onnx")
    module, models = pack
    target = models / "facerestore_models" / "GPEN-BFR-256.onnx"
    shutil.copy(REPO_ROOT / "tests" / "data" / "onnx" / "compact_256_cm1_n0.0625_s64_legacy.onnx", target)
    swapper = models / "facerestore_models" / "inswapper_128.onnx"  # another pack's model: not offered
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["target"], ["output"])], "g",
        [onnx.helper.make_tensor_value_info("target", onnx.TensorProto.FLOAT, [1, 3, 128, 128]),
         onnx.helper.make_tensor_value_info("source", onnx.TensorProto.FLOAT, [1, 512])],
        [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, None)])
    swapper.write_bytes(onnx.helper.make_model(graph).SerializeToString())
    try:
        loader = module.NODE_CLASS_MAPPINGS["GPENLoadModel"]
        offered = loader.INPUT_TYPES()["required"]["model_name"][0]
        assert "GPEN-BFR-256.onnx" in offered and "inswapper_128.onnx" not in offered
        handle = node(pack, "GPENLoadModel").load(model_name="GPEN-BFR-256.onnx", precision="fp32")[0]
        assert handle.size == 256 and handle.patcher.model.config.narrow == 0.0625
    finally:
        target.unlink()
        swapper.unlink()
