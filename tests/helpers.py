"""What several test files (and the benchmarks) build the same way: random GPEN weights, the test photos.

Tests import it as ``from helpers import ...`` (pytest puts ``tests/`` on the import path, as for ``conftest``).
Importing it loads nothing. The benchmarks draw the same random weights with ``benchmarks/bench_gpen.py``'s
``_random_state_dict`` (``test_helpers.py`` holds the two equal), so they run without the test suite.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import numpy as np
import torch

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
