"""End to end inside a real ComfyUI: runs when COMFYUI_DIR points at a ComfyUI checkout, skips otherwise.

Starts ComfyUI on 127.0.0.1 (a free port, CPU) over a temporary base directory holding the pack (symlinked), the
compact vector weights as a GPEN model, the RetinaFace MobileNet weights and two photos from tests/data (OpenCV
YuNet comes from the copy shipped with the pack); checks /object_info and the workflow templates; converts the
step-by-step example workflow to an API prompt, queues it over HTTP and checks the
saved image; checks that a batch of two unrelated photos gives each photo the pixels it gets alone; checks that a
non-GPEN file is not offered; loads a torch detector under ComfyUI's model management and checks that ComfyUI
offloads it; restores a core bicubic upscale (values outside 0..1); refuses NaN widget values before running; serves
the warning-toast extension.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, SKIP_COMFYUI, data_file
from helpers import CORE_NODES, FRONTEND_ONLY, WIDGET_TYPES
from PIL import Image

requests = pytest.importorskip("requests")

COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
pytestmark = pytest.mark.skipif(
    not (COMFYUI_DIR and (Path(COMFYUI_DIR) / "main.py").is_file()),
    reason=SKIP_COMFYUI + "set COMFYUI_DIR to a ComfyUI checkout (with its requirements installed) to run the "
                          "end-to-end test",
)
OUR_NODES = {"GPENLoadModel", "GPENLoadFaceDetector", "GPENDetectFaces", "GPENRestoreFaces", "GPENPasteFaces",
             "GPENFaceRestore", "GPENModelSet"}
MODEL = "compact_256_cm1_n0.0625_s64.safetensors"
MOBILENET = "detection_mobilenet0.25_Final.pth"
MODEL_512 = "compact_512_cm2_n0.0625_s64.safetensors"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-gpen").symlink_to(REPO_ROOT, target_is_directory=True)
    for folder, source, name in [
        ("gpen", data_file("gpen", "compact", MODEL), MODEL),
        ("gpen", data_file("gpen", "compact", MODEL_512), MODEL_512),
        ("gpen", data_file("detectors", MOBILENET), "not_a_gpen.pth"),
        ("facedetection", data_file("detectors", MOBILENET), MOBILENET),
    ]:
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, base / "models" / folder / name)
    (base / "input").mkdir()
    for photo in ("grace_hopper.jpg", "astronaut.jpg"):
        shutil.copy(data_file("faces", photo), base / "input" / photo)
    port = free_port()
    log = open(base / "comfyui.log", "w")
    process = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
         str(base), "--disable-auto-launch", "--verbose", "DEBUG",
         "--database-url", f"sqlite:///{base / 'comfyui.db'}"],
        cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{(base / 'comfyui.log').read_text()[-4000:]}")
            try:
                if requests.get(url + "/system_stats", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("ComfyUI did not answer within 180 s:\n" + (base / "comfyui.log").read_text()[-4000:])
            time.sleep(1)
        yield url, base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def object_info(comfy):
    return requests.get(comfy[0] + "/object_info", timeout=30).json()


def widget_names(info: dict) -> list[str]:
    names = []
    for section in ("required", "optional"):
        for name in info["input_order"].get(section, []):
            kind = info["input"][section][name][0]
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                names.append(name)
    return names


def to_api_prompt(workflow: dict, object_info: dict, overrides: dict) -> dict:
    """What the ComfyUI frontend sends: node id -> class_type and inputs (widget values by name, links as
    [origin id, origin slot]). ``overrides``: {(node type, input name): value}."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) != 0:
            continue
        inputs = dict(zip(widget_names(object_info[node["type"]]), node.get("widgets_values", [])))
        for slot in node["inputs"]:
            if slot["link"] is not None:
                _, origin, origin_slot, *_ = links[slot["link"]]
                inputs[slot["name"]] = [str(origin), origin_slot]
        for (kind, name), value in overrides.items():
            if kind == node["type"]:
                inputs[name] = value
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def run_prompt(url: str, prompt: dict, timeout: float = 240) -> dict:
    response = requests.post(url + "/prompt", json={"prompt": prompt, "client_id": uuid.uuid4().hex}, timeout=30)
    assert response.ok, response.text
    prompt_id = response.json()["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = requests.get(f"{url}/history/{prompt_id}", timeout=10).json()
        if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
            if history[prompt_id]["status"]["status_str"] in ("success", "error"):
                return history[prompt_id]
        time.sleep(0.5)
    pytest.fail(f"prompt {prompt_id} did not finish within {timeout} s")


def test_object_info_lists_every_node(object_info):
    assert OUR_NODES <= set(object_info)
    assert all(object_info[name]["category"].startswith("image/restoration/GPEN") for name in OUR_NODES)
    listed = object_info["GPENLoadModel"]["input"]["required"]["model_name"][0]
    assert sorted(listed) == [MODEL, MODEL_512]  # not_a_gpen.pth (RetinaFace weights) is not offered
    for name, (sockets, _count, outputs) in CORE_NODES.items():  # the core-node table the workflow test uses
        info = object_info[name]
        assert info["output"] == outputs, name
        declared = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        assert {k: v[0] for k, v in declared.items() if k in sockets} == sockets, name


def test_example_workflows_are_served_as_templates(comfy):
    url, _ = comfy
    templates = requests.get(url + "/workflow_templates", timeout=10).json()
    assert sorted(templates["comfyui-gpen"]) == sorted(p.stem for p in (REPO_ROOT / "example_workflows").glob("*.json"))
    served = requests.get(url + "/api/workflow_templates/comfyui-gpen/GPEN Step by Step.json", timeout=10)
    assert served.ok and served.json()["nodes"]
    assert requests.get(url + "/api/workflow_templates/comfyui-gpen/GPEN Step by Step.jpg", timeout=10).ok


def test_step_by_step_workflow_restores_and_saves(comfy, object_info):
    url, base = comfy
    workflow = json.loads((REPO_ROOT / "example_workflows" / "GPEN Step by Step.json").read_text())
    prompt = to_api_prompt(workflow, object_info, {
        ("LoadImage", "image"): "grace_hopper.jpg", ("GPENLoadModel", "model_name"): MODEL,
        ("GPENLoadFaceDetector", "detector"): "yunet_opencv", ("GPENLoadFaceDetector", "allow_download"): False,
        ("SaveImage", "filename_prefix"): "e2e/step",
    })
    result = run_prompt(url, prompt)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"])[:3000]
    save_id = next(k for k, v in prompt.items() if v["class_type"] == "SaveImage")
    (saved,) = result["outputs"][save_id]["images"]
    path = base / "output" / saved["subfolder"] / saved["filename"]
    out = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(base / "input" / "grace_hopper.jpg").convert("RGB"), dtype=np.int16)
    assert out.shape == original.shape == (600, 512, 3)
    diff = np.abs(out - original).max(axis=2)
    changed = np.argwhere(diff > 8)
    assert len(changed) > 20_000  # the face was replaced (random test weights: not a pretty face, but a new one)
    (y1, x1), (y2, x2) = changed.min(0), changed.max(0)
    assert 80 < x1 < x2 < 460 and 20 < y1 < y2 < 460, (x1, y1, x2, y2)  # ... around the face only (x 185-330)
    assert diff[500:, :].max() <= 2 and diff[:, :60].max() <= 2  # the rest is untouched (PNG of the same pixels)
    via_http = requests.get(url + "/view", params={"filename": saved["filename"], "subfolder": saved["subfolder"],
                                                   "type": "output"}, timeout=10)
    assert via_http.ok and via_http.content == path.read_bytes()


def test_a_non_gpen_file_is_not_offered_and_refused_before_running(comfy, object_info):
    url, _ = comfy
    prompt = restore_prompt(["grace_hopper.jpg"])
    prompt["model"]["inputs"]["model_name"] = "not_a_gpen.pth"
    response = requests.post(url + "/prompt", json={"prompt": prompt, "client_id": uuid.uuid4().hex}, timeout=30)
    assert response.status_code == 400 and "not_a_gpen.pth" in response.text


def restore_prompt(images: list[str], detector: str = "yunet_opencv", models: tuple[str, ...] = (MODEL,),
                   scale: str = "1") -> dict:
    """LoadImage (each of ``images``, scaled to 448x512 and batched in order) -> GPEN Face Restore -> SaveImage;
    several ``models`` go through a GPEN Model Set."""
    prompt = {
        "detector": {"class_type": "GPENLoadFaceDetector",
                     "inputs": {"detector": detector, "allow_download": False, "score_threshold": 0.0}},
    }
    for i, name in enumerate(models):
        prompt[f"model{i}"] = {"class_type": "GPENLoadModel", "inputs": {"model_name": name, "precision": "auto"}}
    prompt["model"] = prompt.pop("model0") if len(models) == 1 else {"class_type": "GPENModelSet", "inputs": {
        "model_routing": "smallest_sufficient", **{f"model_{i + 1}": [f"model{i}", 0] for i in range(len(models))}}}
    last = None
    for i, name in enumerate(images):
        prompt[f"load{i}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
        prompt[f"scale{i}"] = {"class_type": "ImageScale", "inputs": {
            "image": [f"load{i}", 0], "upscale_method": "bilinear", "width": 448, "height": 512, "crop": "disabled"}}
        if last is None:
            last = [f"scale{i}", 0]
        else:
            prompt[f"batch{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": last, "image2": [f"scale{i}", 0]}}
            last = [f"batch{i}", 0]
    prompt["restore"] = {"class_type": "GPENFaceRestore", "inputs": {
        "image": last, "gpen_model": ["model", 0], "face_detector": ["detector", 0], "select": "all",
        "strength": 1.0, "template": "gpen", "mask_type": "rounded_rect", "feather": 0.1, "color_correction": True,
        "output_scale": scale, "max_output_size": 8192}}
    prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": ["restore", 0],
                                                            "filename_prefix": "e2e/" + "_".join(images)}}
    return prompt


def saved_images(base: Path, result: dict) -> list[np.ndarray]:
    return [np.asarray(Image.open(base / "output" / s["subfolder"] / s["filename"]).convert("RGB"))
            for s in result["outputs"]["save"]["images"]]


def test_a_batch_of_two_photos_gives_each_photo_its_own_pixels(comfy):
    url, base = comfy
    outputs = {}
    for images in (["grace_hopper.jpg", "astronaut.jpg"], ["grace_hopper.jpg"], ["astronaut.jpg"]):
        result = run_prompt(url, restore_prompt(images))
        assert result["status"]["status_str"] == "success", json.dumps(result["status"])[:3000]
        outputs[tuple(images)] = saved_images(base, result)
    batch = outputs[("grace_hopper.jpg", "astronaut.jpg")]
    assert len(batch) == 2
    assert np.array_equal(batch[0], outputs[("grace_hopper.jpg",)][0])
    assert np.array_equal(batch[1], outputs[("astronaut.jpg",)][0])


def test_a_model_set_restores_each_face_with_the_model_of_its_size(comfy):
    """GPEN Model Set (issue 25) in the real ComfyUI: two loaders into the set into the all-in-one node; at 2x Grace
    Hopper's face (448x512) goes to the 512 model, the astronaut's smaller one to the 256, each with the pixels that
    model alone gives it."""
    url, base = comfy
    both = ["grace_hopper.jpg", "astronaut.jpg"]
    result = run_prompt(url, restore_prompt(both, models=(MODEL, MODEL_512)))
    assert result["status"]["status_str"] == "success", json.dumps(result["status"])[:3000]
    routed = saved_images(base, result)
    alone = {}
    for model in (MODEL, MODEL_512):
        single = run_prompt(url, restore_prompt(both, models=(model,)))
        assert single["status"]["status_str"] == "success", json.dumps(single["status"])[:3000]
        alone[model] = saved_images(base, single)
    assert np.array_equal(routed[0], alone[MODEL_512][0]) and not np.array_equal(routed[0], alone[MODEL][0])
    assert np.array_equal(routed[1], alone[MODEL][1]) and not np.array_equal(routed[1], alone[MODEL_512][1])


def test_the_detector_lives_on_comfyuis_model_management(comfy):
    url, base = comfy
    result = run_prompt(url, restore_prompt(["grace_hopper.jpg"], detector="retinaface_mobile0.25"))
    assert result["status"]["status_str"] == "success", json.dumps(result["status"])[:3000]
    assert requests.post(url + "/free", json={"unload_models": True, "free_memory": True}, timeout=10).ok
    log = base / "comfyui.log"
    deadline = time.monotonic() + 120  # ComfyUI frees between prompts: later on a busy machine
    while "Unloading RetinaFace" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    text = log.read_text()
    assert "Requested to load RetinaFace" in text  # loaded through load_models_gpu like any ComfyUI model
    assert "Unloading RetinaFace" in text  # ... and offloaded by ComfyUI when it frees memory


def test_a_bicubic_upscale_from_core_image_scale_by_is_restored(comfy):
    """Issue 23: core Upscale Image By (bicubic) overshoots 0..1 (-0.14..1.12 on this photo); the pack clips it."""
    url, base = comfy
    prompt = restore_prompt(["grace_hopper.jpg"])
    prompt["upscale"] = {"class_type": "ImageScaleBy", "inputs": {
        "image": ["load0", 0], "upscale_method": "bicubic", "scale_by": 1.5}}
    prompt["restore"]["inputs"]["image"] = ["upscale", 0]
    prompt["restore"]["inputs"]["background"] = ["upscale", 0]
    prompt["save"]["inputs"]["filename_prefix"] = "e2e/bicubic"
    result = run_prompt(url, prompt)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"])[:3000]
    (out,) = saved_images(base, result)
    assert out.shape == (900, 768, 3)


def test_nan_and_out_of_range_widgets_are_refused_before_running(comfy):
    """Issue 22: ComfyUI's own min/max check lets NaN through (``nan < 0`` is False); VALIDATE_INPUTS refuses it."""
    url, _ = comfy
    for name, value, message in [("strength", float("nan"), "strength must be a number from 0 to 1, got nan"),
                                 ("feather", 0.9, "feather must be a number from 0 to 0.5, got 0.9"),
                                 ("strength", "inf", "strength must be a number from 0 to 1, got inf")]:
        prompt = restore_prompt(["grace_hopper.jpg"])
        prompt["restore"]["inputs"][name] = value
        body = json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex})  # NaN as Python's json writes it
        response = requests.post(url + "/prompt", data=body, headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == 400 and message in response.text, response.text[:2000]
    prompt = restore_prompt(["grace_hopper.jpg"])
    prompt["restore"]["inputs"]["image"] = ["model", 0]  # a GPEN_MODEL into IMAGE: ComfyUI's type check still runs
    response = requests.post(url + "/prompt", json={"prompt": prompt, "client_id": uuid.uuid4().hex}, timeout=30)
    assert response.status_code == 400 and "return_type_mismatch" in response.text, response.text[:2000]


def test_the_warning_toast_extension_is_served(comfy):
    url, _ = comfy
    extensions = requests.get(url + "/extensions", timeout=10).json()
    script = next(e for e in extensions if e.endswith("/gpen_warnings.js"))
    served = requests.get(url + script, timeout=10)
    assert served.ok and "gpen.warning" in served.text


def test_a_missing_face_index_reaches_the_client_that_queued_the_prompt(comfy):
    """Issue 23: a warning that changes the result (a face index that does not exist) is sent over the websocket to
    the client that queued the prompt, with the node's id, for web/gpen_warnings.js to show as a toast."""
    import asyncio

    import aiohttp  # ComfyUI's own server library: present wherever COMFYUI_DIR runs

    url, _ = comfy
    client_id = uuid.uuid4().hex
    prompt = {
        "detector": {"class_type": "GPENLoadFaceDetector",
                     "inputs": {"detector": "yunet_opencv", "allow_download": False, "score_threshold": 0.0}},
        "load": {"class_type": "LoadImage", "inputs": {"image": "grace_hopper.jpg"}},
        "detect": {"class_type": "GPENDetectFaces", "inputs": {
            "image": ["load", 0], "face_detector": ["detector", 0], "select": "indices", "indices": "3",
            "sort_by": "area", "min_face_size": 0, "max_faces": 0, "template": "gpen", "crop_size": "256",
            "video_smoothing": 0.0}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["detect", 1]}},
    }

    async def queue_and_listen() -> list[dict]:
        received = []
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
            async with session.post(url + "/prompt", json={"prompt": prompt, "client_id": client_id}) as response:
                assert response.status == 200, await response.text()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                message = await ws.receive(timeout=max(1.0, deadline - time.monotonic()))
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                received.append(data)
                if data["type"] in ("execution_success", "execution_error"):
                    break
        return received

    received = asyncio.run(queue_and_listen())
    assert received[-1]["type"] == "execution_success", received[-1]
    warnings = [m["data"] for m in received if m["type"] == "gpen.warning"]
    assert warnings == [{"message": "face index 3 does not exist: the image has 1 face (index 0)", "node": "detect"}]
