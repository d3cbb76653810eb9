"""What several test files (and the benchmarks) build the same way: random GPEN weights, the test photos, the compact
vectors, the CLI's arguments and input folders, the workflow tables. No test module imports another: what two share
lives here or in conftest.py (tests/test_architecture.py checks).

Tests import it as ``from helpers import ...`` (pytest puts ``tests/`` on the import path, as for ``conftest``).
Importing it loads nothing. The benchmarks draw the same random weights with ``benchmarks/bench_gpen.py``'s
``_random_state_dict`` (``test_helpers.py`` holds the two equal), so they run without the test suite.
"""

from __future__ import annotations

import json
import shutil
import weakref
from pathlib import Path

import cv2
import numpy as np
import torch
from conftest import data_file
from safetensors.torch import load_file

from face_pipeline.alignment import template_points
from face_pipeline.types import DetectedFace
from gpen_arch import GPEN, RELEASED_CONFIGS, GPENConfig

DATA = Path(__file__).resolve().parent / "data"
MODEL_256 = ("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors")  # under tests/data


def random_gpen(config: GPENConfig | int, *, seed: int = 0) -> GPEN:
    """A ``GPEN`` for ``config`` (a ``GPENConfig``, or a released size such as 512), in eval mode, whose every path
    contributes: the network's own initialisation after ``torch.manual_seed(seed)``, then noise weights drawn from
    U(0.2, 0.8) (released models inject their noise features; zero would skip that path) and the biases other than
    the modulations' from N(0, 0.1). The same seed gives the same weights."""
    torch.manual_seed(seed)
    model = GPEN(RELEASED_CONFIGS[config] if isinstance(config, int) else config).eval()
    with torch.no_grad():
        for key, value in model.state_dict().items():  # the state dict's tensors share the parameters' storage
            if key.endswith("noise.weight"):
                value.uniform_(0.2, 0.8)
            elif key.endswith("bias") and "modulation" not in key:
                value.normal_(0.0, 0.1)
    return model


def random_gpen_state(config: GPENConfig | int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of ``random_gpen(config, seed=seed)``."""
    return random_gpen(config, seed=seed).state_dict()


def random_checkpoint(size: int, *, seed: int | None = None) -> dict[str, torch.Tensor]:
    """A released-size checkpoint's keys and shapes filled with N(0, 1) values (seed: ``size`` unless given), built
    without materialising a model: for loader tests, not for forwards."""
    with torch.device("meta"):
        shapes = GPEN(RELEASED_CONFIGS[size]).state_dict()
    gen = torch.Generator().manual_seed(size if seed is None else seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in shapes.items()}


def load_photo(name: str) -> torch.Tensor:
    """``tests/data/faces/<name>`` as ``[1, 3, H, W]`` float32 RGB 0..1."""
    import cv2

    bgr = cv2.imread(str(DATA / "faces" / name))
    if bgr is None:
        raise FileNotFoundError(f"{DATA / 'faces' / name} is missing or unreadable (tests/data/MANIFEST.md lists it)")
    return torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float() / 255


def official_landmarks(name: str) -> np.ndarray:
    """``[5, 2]`` (x, y): the five landmarks the official pipeline found on ``tests/data/faces/<name>``."""
    entries = json.loads((DATA / "gpen" / "alignment" / "alignment.json").read_text())
    return np.asarray(entries[name]["landmarks_xy"], dtype=np.float64)


def write_flat_png(path: Path, width: int, height: int, value: int = 128) -> Path:
    """An RGB PNG of ``width`` x ``height`` pixels, all ``value``, written row by row through zlib: a 16000x16000
    image is a 0.8 MB file, made without ever holding its pixels (what a decompression bomb looks like)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * (3 * width)  # filter type 0, then the row's RGB bytes
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def grid_faces(image: int, *, count: int, side: float, spacing: float, tilt: float = 0.2) -> list[DetectedFace]:
    """``count`` faces of about ``side`` pixels in a grid ``spacing`` apart (spacing < side: neighbours overlap),
    each turned a little, with the GPEN template's landmarks."""
    points = template_points("gpen", 512).astype(np.float64) * (side / 512)  # [5, 2] in a side x side box
    faces = []
    columns = int(np.ceil(np.sqrt(count)))
    for k in range(count):
        angle = tilt * ((k % 3) - 1)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        origin = np.array([10 + spacing * (k % columns), 10 + spacing * (k // columns)])
        landmarks = (points - side / 2) @ rotation.T + side / 2 + origin
        faces.append(DetectedFace(box=(*origin, *(origin + side)), score=0.9, image_index=image,
                                  landmarks=tuple((float(x), float(y)) for x, y in landmarks)))
    return faces


def count_alive_restores(monkeypatch) -> list[int]:
    """Replace the pipeline's ``restore_faces`` with one that counts, after each restore step, the faces whose
    aligned and restored crops are still alive (weak references); returns that list, one entry per step."""
    from face_pipeline import pipeline as pipeline_module

    alive: set[int] = set()
    most: list[int] = []
    real_restore = pipeline_module.restore_faces

    def counting_restore(model, batch, **kwargs):
        restored = real_restore(model, batch, **kwargs)
        for tensor in (restored.crops, restored.restored):
            key = id(tensor)
            alive.add(key)
            weakref.finalize(tensor, alive.discard, key)
        most.append(len(alive) // 2 * restored.num_faces)  # faces whose crops are alive now, this step's included
        return restored

    monkeypatch.setattr(pipeline_module, "restore_faces", counting_restore)
    return most


# --------------------------------------------------------------------------------------------- vectors, CLI runs
def to_input(rgb_u8: torch.Tensor, repeat: int = 1) -> torch.Tensor:
    """``[S, S, 3]`` uint8 RGB -> ``[1, 3, S * repeat, S * repeat]`` in [-1, 1] (nearest repeat, as the vectors say)."""
    x = ((rgb_u8.float() / 255) - 0.5) / 0.5
    x = x.permute(2, 0, 1).unsqueeze(0)
    return x.repeat_interleave(repeat, dim=2).repeat_interleave(repeat, dim=3).contiguous()


def load_compact(name: str):
    """(weights path, meta, input, {what: (how to take it from the output, official values)}) of a compact vector."""
    meta = json.loads(data_file("gpen", "compact", f"{name}.json").read_text())
    io = load_file(str(data_file("gpen", "compact", f"{name}_io.safetensors")))
    if "output" in io:
        x = to_input(io["input_rgb_u8"])
        checks = {"output": (lambda out: out, io["output"].unsqueeze(0))}
    else:  # 2048: the input is the stored 256 one repeated 8x; every 8th output pixel and the central 128x128 kept
        x = to_input(io["input_rgb_u8"], repeat=meta["size"] // io["input_rgb_u8"].shape[0])
        centre = slice(meta["size"] // 2 - 64, meta["size"] // 2 + 64)
        checks = {"every_8th": (lambda out: out[0, :, ::8, ::8], io["output_every_8th"]),
                  "centre_128": (lambda out: out[0, :, centre, centre], io["output_center_128"])}
    return data_file("gpen", "compact", f"{name}.safetensors"), meta, x, checks


DEFAULT = object()  # a row that loads the real (tiny) model and the OpenCV detector


def face(tmp: Path, name: str) -> Path:
    """A copy of a photo with one face (600x512) under tmp/in."""
    path = tmp / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        shutil.copy(data_file("faces", "grace_hopper.jpg"), path)
    else:
        cv2.imencode(path.suffix or ".png", cv2.imread(str(data_file("faces", "grace_hopper.jpg"))))[1].tofile(
            str(path))
    return path


def plain(tmp: Path, name: str, suffix: str = ".png") -> Path:
    """A small image without a face under tmp/in (encoded as ``suffix`` whatever its name)."""
    path = tmp / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imencode(suffix, np.full((30, 40, 3), 120, np.uint8))[1].tofile(str(path))
    return path


def cmd(tmp: Path, *inputs, model=DEFAULT, output: str | Path | None = None, detector_dir=None) -> list[str]:
    """The CLI arguments of the CLI tests: ``inputs``, the tiny model (or ``tmp/model``), ``--output`` (default
    ``tmp/out``), OpenCV YuNet from ``detector_dir`` (an empty folder by default: the pack's copy), no download."""
    model_path = str(data_file(*MODEL_256)) if model is DEFAULT else str(tmp / model)
    return [*map(str, inputs), "--model", model_path, "--output", str(output or tmp / "out"), "--detector",
            "yunet_opencv", "--detector-dir", str(detector_dir or tmp / "no-detectors"), "--no-download"]


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``: its relative POSIX path -> its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_photos(folder: Path) -> Path:
    """12 small images: 7 with the face (resized, cropped; 3 in a subfolder), 4 without, 1 unreadable."""
    photo = cv2.imread(str(data_file("faces", "grace_hopper.jpg")))
    h, w = photo.shape[:2]
    (folder / "sub").mkdir(parents=True)
    for i, size in enumerate((160, 200, 240, 280)):
        cv2.imwrite(str(folder / f"face_{i}.jpg"), cv2.resize(photo, (size * w // h, size),
                                                               interpolation=cv2.INTER_AREA))
    for i, (y, x, s) in enumerate(((20, 60, 320), (40, 100, 360), (0, 0, 400))):
        cv2.imwrite(str(folder / "sub" / f"crop_{i}.png"), cv2.resize(photo[y:y + s, x:x + s], (s // 2, s // 2)))
    for i in range(3):
        cv2.imwrite(str(folder / f"plain_{i}.png"), np.full((48 + 8 * i, 64, 3), 60 + 40 * i, np.uint8))
    cv2.imwrite(str(folder / "noise.jpg"), np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8))
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    return folder


def ray_args(inputs: Path | str, output: Path | str, *extra: str) -> list[str]:
    """The CLI arguments of the Ray engine tests: the tiny model, the pack's OpenCV YuNet, crops saved."""
    return [str(inputs), "--model", str(data_file(*MODEL_256)), "--output", str(output), "--detector", "yunet_opencv",
            "--no-download", "--save-crops", *extra]  # the pack's own copy of the OpenCV YuNet weights


# ------------------------------------------------------------------------------------------------------ workflows
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# The ComfyUI core nodes the examples use: socket inputs (name -> type), number of widget values the UI stores
# (LoadImage/LoadVideo keep a second value for their upload button), output types. The end-to-end test checks this
# table against a real ComfyUI's /object_info.
CORE_NODES = {
    "LoadImage": ({}, 2, ["IMAGE", "MASK"]),
    "SaveImage": ({"images": "IMAGE"}, 1, []),
    "PreviewImage": ({"images": "IMAGE"}, 0, []),
    "MaskToImage": ({"mask": "MASK"}, 0, ["IMAGE"]),
    "LoadVideo": ({}, 2, ["VIDEO"]),
    "GetVideoComponents": ({"video": "VIDEO"}, 0, ["IMAGE", "AUDIO", "FLOAT"]),
    "CreateVideo": ({"images": "IMAGE", "audio": "AUDIO"}, 1, ["VIDEO"]),
    "SaveVideo": ({"video": "VIDEO"}, 3, []),
}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # notes live in the UI only; never sent to the server
