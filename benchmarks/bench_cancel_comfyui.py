"""How long a real ComfyUI keeps computing after Cancel while GPEN Face Restore runs, on the CPU.

    COMFYUI_DIR=/path/to/ComfyUI python benchmarks/bench_cancel_comfyui.py --size 2048 --faces 4 --cancel-after 20

Run it with the Python that has ComfyUI's requirements. It writes full-size random GPEN weights (the released
configuration for --size) into a temporary models folder, starts ComfyUI on 127.0.0.1 (CPU) with this pack, queues
GPEN Face Restore on a batch of --faces copies of ../shared/faces/grace_hopper.jpg (OpenCV YuNet, shipped with the
pack or taken from ../shared/detectors), presses Cancel (POST /interrupt) --cancel-after seconds after the prompt
starts, and prints the time from Cancel to the prompt's end, with the server's log lines about it. Beside it, the
time of one face's forward of the same weights in this process (the machine is shared: compare the two).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, choices=[256, 512, 1024, 2048])
    parser.add_argument("--faces", type=int, default=4)
    parser.add_argument("--cancel-after", type=float, default=20.0, help="seconds after the prompt starts")
    args = parser.parse_args()
    comfyui = os.environ.get("COMFYUI_DIR")
    if not comfyui or not (Path(comfyui) / "main.py").is_file():
        sys.exit("set COMFYUI_DIR to a ComfyUI checkout")

    from bench_gpen import _random_state_dict
    from safetensors.torch import save_file

    base = Path(tempfile.mkdtemp(prefix="gpen-cancel-"))
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-gpen").symlink_to(REPO_ROOT, target_is_directory=True)
    for folder in ("gpen", "facedetection", "input"):
        (base / ("models" if folder != "input" else "") / folder).mkdir(parents=True, exist_ok=True)
    model_name = f"GPEN-BFR-{args.size}-random.safetensors"
    state = _random_state_dict(args.size, 0)
    save_file({k: v.contiguous() for k, v in state.items()}, str(base / "models" / "gpen" / model_name))
    import torch

    from gpen_arch import load_gpen

    model = load_gpen(state)
    with torch.no_grad():
        model(torch.zeros(1, 3, args.size, args.size))  # the first forward builds the derived weights
        start = time.perf_counter()
        model(torch.zeros(1, 3, args.size, args.size))
        one_face = time.perf_counter() - start
    del model, state
    shared = REPO_ROOT.parent / "shared"
    shutil.copy(shared / "detectors" / "face_detection_yunet_2023mar.onnx", base / "models" / "facedetection")
    shutil.copy(shared / "faces" / "grace_hopper.jpg", base / "input" / "photo.jpg")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = base / "comfyui.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                   "--base-directory", str(base), "--disable-auto-launch",
                                   "--database-url", f"sqlite:///{base / 'comfyui.db'}"],
                                  cwd=comfyui, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                if requests.get(url + "/system_stats", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        prompt = {
            "model": {"class_type": "GPENLoadModel", "inputs": {"model_name": model_name, "precision": "fp32"}},
            "detector": {"class_type": "GPENLoadFaceDetector",
                         "inputs": {"detector": "yunet_opencv", "allow_download": False, "score_threshold": 0.0}},
            "load": {"class_type": "LoadImage", "inputs": {"image": "photo.jpg"}},
            "repeat": {"class_type": "RepeatImageBatch", "inputs": {"image": ["load", 0], "amount": args.faces}},
            "restore": {"class_type": "GPENFaceRestore", "inputs": {
                "image": ["repeat", 0], "gpen_model": ["model", 0], "face_detector": ["detector", 0],
                "select": "all", "strength": 1.0, "template": "gpen", "mask_type": "rounded_rect", "feather": 0.1,
                "color_correction": True, "output_scale": "1", "max_output_size": 8192}},
            "preview": {"class_type": "PreviewImage", "inputs": {"images": ["restore", 0]}},
        }
        response = requests.post(url + "/prompt", json={"prompt": prompt, "client_id": uuid.uuid4().hex}, timeout=30)
        response.raise_for_status()
        prompt_id = response.json()["prompt_id"]
        started = time.monotonic()
        time.sleep(args.cancel_after)
        cancelled = time.monotonic()
        requests.post(url + "/interrupt", timeout=10)
        while True:
            history = requests.get(f"{url}/history/{prompt_id}", timeout=10).json()
            if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
                break
            time.sleep(0.1)
        ended = time.monotonic()
        status = history[prompt_id]["status"]
        print(f"GPEN-{args.size} fp32 on the CPU, {args.faces} faces: Cancel {cancelled - started:.1f} s after the "
              f"prompt started; the prompt ended {ended - cancelled:.2f} s after Cancel ({status['status_str']}, "
              f"{[m[0] for m in status['messages']]}); one face's forward here: {one_face:.2f} s")
    finally:
        server.terminate()
        server.wait(timeout=30)
    for line in log_path.read_text().splitlines():
        if any(word in line for word in ("Processing interrupted", "Prompt executed", "loaded GPEN", "batch size")):
            print("log:", line)


if __name__ == "__main__":
    main()
