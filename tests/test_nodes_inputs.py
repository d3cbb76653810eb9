"""What upstream nodes produce, and what the user sees (issues 22 and 23): resampler overshoot clipped, other
conventions refused naming them, alpha kept, every widget value checked in VALIDATE_INPUTS, warnings sent to the
frontend. With the ComfyUI test double (tests/comfy_double)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import subprocess
import sys
import time

import pytest
import torch
from conftest import DETECT, REPO_ROOT, comfy_image, node

pytestmark = pytest.mark.usefixtures("like_comfyui")

PASTE = dict(mask_type="rounded_rect", feather=0.1, color_correction=True, output_scale="1", max_output_size=8192)
NODES = ("GPENLoadModel", "GPENLoadFaceDetector", "GPENDetectFaces", "GPENRestoreFaces", "GPENPasteFaces",
         "GPENFaceRestore")


def bridge(pack):
    return sys.modules[f"{pack[0].__name__}.nodes.comfy_bridge"]


def bicubic(image: torch.Tensor, scale: float) -> torch.Tensor:
    """What core ComfyUI's Upscale Image By (bicubic) gives: IMAGE ``[B, H, W, C]`` resampled with torch's bicubic."""
    up = torch.nn.functional.interpolate(image.permute(0, 3, 1, 2), scale_factor=scale, mode="bicubic",
                                         align_corners=False)
    return up.permute(0, 2, 3, 1).contiguous()


def all_in_one(pack, gpen_model, detector, image, **options):
    return node(pack, "GPENFaceRestore").run(image=image, gpen_model=gpen_model, face_detector=detector,
                                             select="all", strength=1.0, template="gpen", **{**PASTE, **options})


def sent(pack) -> list[tuple[str, dict, str]]:
    """The messages the pack sent to the frontend (the test double's PromptServer), and forget them."""
    server = bridge(pack).PromptServer.instance
    messages, server.messages = server.messages, []
    return messages


# ---------------------------------------------------------------------------------------- values from upstream nodes
@pytest.fixture(scope="module")
def upscaled():
    """grace_hopper upscaled 1.5x with bicubic: 900x768, values about -0.14..1.12 (the issue's -0.138..1.12)."""
    image = bicubic(comfy_image("grace_hopper.jpg"), 1.5)
    assert image.min() < -0.1 and image.max() > 1.1  # really overshoots, beyond the library's strict 0.05
    return image


def test_a_bicubic_upscale_is_restored(pack, gpen_model, detector, upscaled):
    out, mask, count, *_ = all_in_one(pack, gpen_model, detector, upscaled)
    assert count == 1 and out.shape == upscaled.shape and mask.amax() == 1
    assert out.min() >= 0 and out.max() <= 1
    away = mask[0] == 0  # away from the face: the input, clipped to 0..1
    assert torch.equal(out[0][away], upscaled[0].clamp(0, 1)[away])


def test_a_bicubic_upscale_as_background_is_used(pack, gpen_model, detector, upscaled):
    image = comfy_image("grace_hopper.jpg")
    out, mask, count, *_ = all_in_one(pack, gpen_model, detector, image, background=upscaled, output_scale="2")
    assert count == 1 and out.shape == (1, 1200, 1024, 3) and out.min() >= 0 and out.max() <= 1
    away = mask[0] == 0
    background = torch.nn.functional.interpolate(upscaled.permute(0, 3, 1, 2).clamp(0, 1), size=(1200, 1024),
                                                 mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    assert (out[0][away] - background[0].permute(1, 2, 0)[away]).abs().max() < 1e-5  # the clipped upscale, resized
    faces, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, **DETECT)
    restored, _ = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                         strength=1.0)
    pasted, _ = node(pack, "GPENPasteFaces").paste(image=image, faces=restored, background=upscaled,
                                                   **{**PASTE, "output_scale": "2"})
    assert pasted.shape == (1, 1200, 1024, 3) and pasted.min() >= 0 and pasted.max() <= 1


@pytest.mark.parametrize("convert, found", [
    (lambda x: x * 255, r"found 0\.\.255 \(this looks like 0\.\.255: divide by 255\)"),
    (lambda x: x * 2 - 1, r"found -1\.\.1 \(this looks like -1\.\.1: convert with x \* 0\.5 \+ 0\.5\)"),
])
def test_other_conventions_are_refused_naming_them(pack, gpen_model, detector, convert, found):
    image = comfy_image("grace_hopper.jpg")
    wrong = convert(torch.linspace(0, 1, 600 * 512 * 3).reshape(1, 600, 512, 3))
    with pytest.raises(ValueError, match=r"the image input must hold values in 0\.\.1; " + found):
        all_in_one(pack, gpen_model, detector, wrong)
    with pytest.raises(ValueError, match=r"the background input must hold values in 0\.\.1; " + found):
        all_in_one(pack, gpen_model, detector, image, background=wrong)
    with pytest.raises(ValueError, match=r"the image input must hold values in 0\.\.1; " + found):
        node(pack, "GPENDetectFaces").detect(image=wrong, face_detector=detector, **DETECT)


def test_masks_with_overshoot_are_accepted_and_others_refused(pack, gpen_model, detector):
    image = comfy_image("grace_hopper.jpg")
    hard = torch.zeros(1, 60, 52)
    hard[:, 10:40, 15:40] = 1
    soft = bicubic(hard[..., None], 10)[..., 0]  # a mask upscaled with bicubic rings like an image
    assert soft.min() < -0.05 and soft.max() > 1.05
    protected, *_ = all_in_one(pack, gpen_model, detector, image, protect_mask=soft)
    clipped, *_ = all_in_one(pack, gpen_model, detector, image, protect_mask=soft.clamp(0, 1))
    assert torch.equal(protected, clipped)
    chosen = all_in_one(pack, gpen_model, detector, image, region_mask=soft)
    assert chosen[2] == 1
    with pytest.raises(ValueError, match=r"the protect_mask input must hold values in 0\.\.1; found 0\.\.255 \(this "
                                         r"looks like 0\.\.255"):
        all_in_one(pack, gpen_model, detector, image, protect_mask=hard * 255)
    with pytest.raises(ValueError, match=r"the region_mask input must hold values in 0\.\.1; found -1\.\.1"):
        node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, region_mask=hard * 2 - 1, **DETECT)


# --------------------------------------------------------------------------------------------------------- alpha
def rgba(image: torch.Tensor) -> torch.Tensor:
    """``image`` with an alpha channel: a ramp from transparent (left) to opaque (right)."""
    alpha = torch.linspace(0, 1, image.shape[2]).expand(*image.shape[:3])[..., None]
    return torch.cat([image, alpha], dim=-1)


def test_alpha_is_kept_by_the_all_in_one_and_the_paste(pack, gpen_model, detector):
    image = rgba(comfy_image("grace_hopper.jpg"))
    out, mask, count, *_ = all_in_one(pack, gpen_model, detector, image)
    assert count == 1 and out.shape == (1, 600, 512, 4) and torch.equal(out[..., 3], image[..., 3])
    assert torch.equal(out[..., :3], all_in_one(pack, gpen_model, detector, image[..., :3])[0])  # colours as RGB
    double = all_in_one(pack, gpen_model, detector, image, output_scale="2")[0]
    assert double.shape == (1, 1200, 1024, 4)
    assert torch.equal(double[..., 3], image[..., 3].repeat_interleave(2, 1).repeat_interleave(2, 2))
    faces, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, **DETECT)
    restored, _ = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                         strength=1.0)
    pasted, _ = node(pack, "GPENPasteFaces").paste(image=image, faces=restored, **PASTE)
    assert pasted.shape == (1, 600, 512, 4) and torch.equal(pasted[..., 3], image[..., 3])
    rgb = image[..., :3]  # only the background has an alpha: the output takes it, resized
    from_background = all_in_one(pack, gpen_model, detector, rgb, background=rgba(bicubic(rgb, 2)))[0]
    assert from_background.shape == (1, 600, 512, 4)
    assert (from_background[0, :, :, 3] - torch.linspace(0, 1, 512)).abs().max() < 0.01
    assert all_in_one(pack, gpen_model, detector, rgb)[0].shape == (1, 600, 512, 3)  # RGB stays RGB


# ------------------------------------------------------------------------------------------------- VALIDATE_INPUTS
def widgets(cls) -> dict:
    spec = cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def numbers(cls) -> dict:
    return {name: extra for name, (kind, *rest) in widgets(cls).items() if kind in ("INT", "FLOAT")
            for extra in [rest[0] if rest else {}]}


def defaults(cls) -> dict:
    """What the frontend sends for an untouched node: every widget at its default (links left out)."""
    values = {}
    for name, (kind, *rest) in widgets(cls).items():
        extra = rest[0] if rest else {}
        if isinstance(kind, list):
            values[name] = extra.get("default", kind[0] if kind else None)
        elif "default" in extra:
            values[name] = extra["default"]
    return values


@pytest.mark.parametrize("name", NODES)
def test_every_number_is_checked_in_validate_inputs(pack, name):
    """NaN (a JSON NaN or the string "nan" become a float NaN in ComfyUI, and its own min/max test lets it pass),
    infinities and values outside the declared range are refused before the prompt runs, naming the input."""
    cls = pack[0].NODE_CLASS_MAPPINGS[name]
    inputs = numbers(cls)
    if not inputs:  # Load GPEN Model: no number to check, and no VALIDATE_INPUTS to replace ComfyUI's own checks
        assert name == "GPENLoadModel" and not hasattr(cls, "VALIDATE_INPUTS")
        return
    spec = inspect.getfullargspec(cls.VALIDATE_INPUTS)
    # ComfyUI (execution.py validate_inputs): **kwargs receives every input; without `input_types` among the
    # arguments ComfyUI keeps checking the types of linked inputs itself
    assert spec.varkw is not None and "input_types" not in spec.args
    base = defaults(cls)
    if "mask_type" in base:
        base["mask_type"] = "rounded_rect"  # parsing masks need weights this test does not provide
    assert cls.VALIDATE_INPUTS(**base) is True
    assert cls.VALIDATE_INPUTS(**{**base, **dict.fromkeys(inputs)}) is True  # linked: not known yet, not refused
    for input_name, extra in inputs.items():
        bad = [math.nan, math.inf, -math.inf, extra["min"] - 1]
        if "max" in extra:
            bad.append(extra["max"] + 1)
        if widgets(cls)[input_name][0] == "INT":
            bad.append(extra["min"] + 0.5)
        for value in bad:
            answer = cls.VALIDATE_INPUTS(**{**base, input_name: value})
            assert isinstance(answer, str) and answer.startswith(f"{input_name} must be "), (input_name, value)
            assert repr(value) in answer, answer


def test_choices_and_indices_are_checked_in_validate_inputs(pack):
    detect = pack[0].NODE_CLASS_MAPPINGS["GPENDetectFaces"]
    base = defaults(detect)
    assert detect.VALIDATE_INPUTS(**{**base, "sort_by": "size"}) == ("sort_by must be one of area, left_to_right, "
                                                                       "top_to_bottom, score; got 'size'")
    start = time.perf_counter()
    answer = detect.VALIDATE_INPUTS(**{**base, "select": "indices", "indices": "0-99999999999"})
    assert time.perf_counter() - start < 1.0
    assert answer.startswith("indices: face index 99999999999 in '0-99999999999' is above 9999")
    with pytest.raises(ValueError, match="is above 9999"):
        node(pack, "GPENDetectFaces").detect(image=comfy_image("grace_hopper.jpg"), face_detector=None,
                                             **{**DETECT, "select": "indices", "indices": "0-99999999999"})
    restore_all = pack[0].NODE_CLASS_MAPPINGS["GPENFaceRestore"]
    assert restore_all.VALIDATE_INPUTS(**{**defaults(restore_all), "mask_type": "x"}).startswith(
        "mask_type must be one of")


def test_nan_score_threshold_is_refused(pack):
    loader = pack[0].NODE_CLASS_MAPPINGS["GPENLoadFaceDetector"]
    assert loader.VALIDATE_INPUTS(**{**defaults(loader), "score_threshold": math.nan}) == (
        "score_threshold must be a number from 0 to 1, got nan")
    with pytest.raises(ValueError, match="score_threshold must be 0 .* or from 0.3 to 1, got nan"):  # linked: at run
        loader().load(detector="yunet_opencv", allow_download=False, score_threshold=math.nan)
    options = sys.modules[f"{pack[0].__name__}.face_pipeline.options"]
    with pytest.raises(ValueError, match="score_threshold must be a number from 0 to 1, got nan"):
        options.DetectOptions(score_threshold=math.nan)


def test_score_threshold_means_the_same_in_the_nodes_and_the_cli(pack):
    """0 is the detector's own default everywhere; a threshold below the floor is refused before the prompt runs."""
    import cli

    loader = pack[0].NODE_CLASS_MAPPINGS["GPENLoadFaceDetector"]
    floor = "score_threshold must be 0 (the detector's own) or from 0.3 to 1, got 0.1: below 0.3 the detectors"
    assert loader.VALIDATE_INPUTS(**{**defaults(loader), "score_threshold": 0.1}).startswith(floor)
    assert loader.VALIDATE_INPUTS(**{**defaults(loader), "score_threshold": 0.0}) is True
    assert loader.VALIDATE_INPUTS(**{**defaults(loader), "score_threshold": 0.3}) is True
    with pytest.raises(ValueError, match=r"from 0\.3 to 1, got 0\.1"):  # linked: refused when it runs
        loader().load(detector="yunet_opencv", allow_download=False, score_threshold=0.1)
    own = loader().load(detector="yunet_opencv", allow_download=False, score_threshold=0.0)[0]
    assert own.detector.score_threshold == type(own.detector).default_score_threshold == 0.6
    args = cli.parse_args(["p.jpg", "--model", "m.pth", "--output", "o", "--threshold", "0"])
    assert cli.build_options(args).detect.score_threshold is None  # the detector's own, as in the node
    assert cli.build_options(cli.parse_args(["p.jpg", "--model", "m.pth", "--output", "o", "--threshold", "0.5"])
                             ).detect.score_threshold == 0.5


def test_every_float_option_refuses_nan_and_infinity():
    from face_pipeline.options import STAGES

    checked = 0
    for record in STAGES.values():
        for field in dataclasses.fields(record):
            option = field.metadata.get("option")
            if option is None or option.low is None:
                continue
            for value in (math.nan, math.inf, -math.inf):
                with pytest.raises(ValueError, match=rf"{field.name} must be a .*, got {value!r}"):
                    record(**{field.name: value})
            checked += 1
    assert checked >= 10


# ------------------------------------------------------------------------------------ what reaches the frontend
def test_a_missing_face_index_is_shown_with_the_face_count(pack, detector):
    utils = bridge(pack).get_executing_context.__globals__  # the double the pack imported (another test module's
    sent(pack)                                                # fixture may have dropped it from sys.modules since)
    utils["executing"] = utils["ExecutionContext"](prompt_id="p1", node_id="12", list_index=0)
    try:
        faces, _, count, *_ = node(pack, "GPENDetectFaces").detect(
            image=comfy_image("grace_hopper.jpg"), face_detector=detector,
            **{**DETECT, "select": "indices", "indices": "0, 3-4"})
    finally:
        utils["executing"] = None
    assert count == 1
    assert sent(pack) == [("gpen.warning", {"message": "face indices 3, 4 do not exist: the image has 1 face (index 0)",
                                            "node": "12"}, "test-client")]
    node(pack, "GPENDetectFaces").detect(image=torch.full((2, 64, 96, 3), 0.5), face_detector=detector, **DETECT)
    assert sent(pack) == [("gpen.warning", {"message": "no face found in 2 of 2 image(s) (index 0, 1): returned "
                                                       "unchanged", "node": None}, "test-client")]
    node(pack, "GPENDetectFaces").detect(image=comfy_image("grace_hopper.jpg"), face_detector=detector, **DETECT)
    assert sent(pack) == []  # nothing to say


def test_a_model_for_another_mode_is_shown(pack, gpen_model, detector):
    faces, *_ = node(pack, "GPENDetectFaces").detect(image=comfy_image("grace_hopper.jpg"), face_detector=detector,
                                                     **DETECT)
    sent(pack)
    node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="colorize", strength=1.0)
    ((event, data, client),) = sent(pack)
    assert event == "gpen.warning" and client == "test-client"
    assert data["message"].startswith("mode 'colorize' with GPEN-test-256.pth, which looks like a model for "
                                      "'restore' by its name: expect poor results")


def test_the_frontend_extension_is_served_and_listens(pack):
    assert pack[0].WEB_DIRECTORY == "./web"
    script = (REPO_ROOT / "web" / "gpen_warnings.js").read_text()
    assert f'const EVENT = "{bridge(pack).WARNING_EVENT}";' in script
    assert "api.addEventListener(EVENT" in script and "toast.add({ severity: \"warn\"" in script


# --------------------------------------------------------------------------------------------------------- OpenCV
def test_loading_opencv_yunet_prints_no_warning(tmp_path):
    """OpenCV 5 warns "setPreferableTarget Targets are not supported by the new graph engine" on fd 2 at every load of
    FaceDetectorYN; the detector silences it (and restores OpenCV's log level)."""
    code = ("import cv2\n"
            "from face_pipeline.detection import load_detector\n"
            "level = cv2.utils.logging.getLogLevel()\n"
            f"load_detector('yunet_opencv', weights_dir={str(tmp_path)!r}, allow_download=False, device='cpu')\n"
            f"load_detector('yunet_opencv', weights_dir={str(tmp_path)!r}, allow_download=False, device='cpu')\n"
            "assert cv2.utils.logging.getLogLevel() == level, 'log level not restored'\n"
            "print('loaded')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "loaded", done.stderr
    assert "setPreferableTarget" not in done.stderr and "WARN" not in done.stderr, done.stderr
