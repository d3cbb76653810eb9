"""Everything that touches ComfyUI's own modules: model folders, devices and dtypes, loading models on ComfyUI's
model management, progress bars, cancel, and tensor layout at the node boundary.

ComfyUI's IMAGE is ``[B, H, W, C]`` float 0..1 and MASK ``[B, H, W]``; the face pipeline works on
``[B, 3, H, W]``.
"""

from __future__ import annotations

import logging
import os

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths

from ..face_pipeline.image import to_rgb_float
from ..face_pipeline.restoration.batching import bytes_per_face
from ..gpen_arch import SUPPORTED_SUFFIXES, load_gpen, model_bytes, read_state_dict
from .handles import GPENModelHandle

logger = logging.getLogger(__name__)

GPEN_FOLDERS = ("gpen", "facerestore_models")  # facerestore_models: where ReActor/facerestore_cf users keep GPEN
DETECTOR_FOLDER = "facedetection"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def register_model_folders() -> None:
    """Add ``models/gpen``, ``models/facerestore_models`` and ``models/facedetection`` to ComfyUI's folder list.

    Paths a user (extra_model_paths.yaml) or another pack (ReActor, facerestore_cf) configured stay first; our default
    folder is appended. The extension set is replaced by a new set, never updated in place: other packs register
    these folders with ComfyUI's shared ``supported_pt_extensions`` object, which must not grow ``.onnx``.
    """
    wanted = {name: set(SUPPORTED_SUFFIXES) for name in GPEN_FOLDERS}
    wanted[DETECTOR_FOLDER] = {".pth", ".onnx"}
    for name, extensions in wanted.items():
        known = name in folder_paths.folder_names_and_paths
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, existing = folder_paths.folder_names_and_paths[name]
        if not known:
            folder_paths.folder_names_and_paths[name] = (paths, extensions)
        elif existing:  # an empty collection means "every file": that already includes ours
            folder_paths.folder_names_and_paths[name] = (paths, set(existing) | extensions)


def list_gpen_files() -> list[str]:
    """GPEN checkpoints the loader can read, from every GPEN model folder."""
    names: set[str] = set()
    for folder in GPEN_FOLDERS:
        try:
            names.update(folder_paths.get_filename_list(folder))
        except KeyError:
            continue
    return sorted(n for n in names if os.path.splitext(n)[1].lower() in SUPPORTED_SUFFIXES)


def gpen_file_path(name: str) -> str:
    for folder in GPEN_FOLDERS:
        try:
            path = folder_paths.get_full_path(folder, name)
        except KeyError:
            continue
        if path:
            return path
    folders = ", ".join(p for f in GPEN_FOLDERS for p in folder_paths.folder_names_and_paths.get(f, ([], None))[0])
    raise FileNotFoundError(f"GPEN model {name!r} not found in {folders}; put the .pth/.safetensors file there")


def file_signature(name: str) -> str:
    """Path, size and modification time of a GPEN file ("" when missing: loading then reports the error)."""
    try:
        path = gpen_file_path(name)
    except FileNotFoundError:
        return ""
    stat = os.stat(path)
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def detector_folder() -> str:
    """The first facedetection folder (where weights are looked up and downloads go)."""
    return folder_paths.get_folder_paths(DETECTOR_FOLDER)[0]


def find_in_detector_folders(file_name: str) -> str | None:
    for folder in folder_paths.get_folder_paths(DETECTOR_FOLDER):
        if os.path.isfile(os.path.join(folder, file_name)):
            return folder
    return None


def compute_device() -> torch.device:
    return mm.get_torch_device()


def choose_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` follows ComfyUI's choice for the device: fp16 where it would use fp16, else bf16, else fp32."""
    if precision != "auto":
        return _DTYPES[precision]
    if mm.should_use_fp16(device):
        return torch.float16
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32


def load_gpen_model(name: str, precision: str, *, cuda_graphs: bool = False) -> GPENModelHandle:
    path = gpen_file_path(name)
    device = compute_device()
    dtype = choose_dtype(precision, device)
    model = load_gpen(read_state_dict(path), device=mm.unet_offload_device(), dtype=dtype)
    model.cuda_graphs = bool(cuda_graphs)  # used on CUDA only; the graph is dropped whenever ComfyUI moves the model
    # the folded weights the fast forward derives on the GPU live with the model: ComfyUI must make room for them too
    size = model_bytes(model) + model.derived_weight_bytes(device)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=mm.unet_offload_device(),
                                               size=size)
    logger.info("loaded %s: GPEN-%d, %s", name, model.config.size, dtype)
    return GPENModelHandle(patcher=patcher, file_name=name, size=model.config.size, dtype=dtype)


RESERVED_BATCH = 4  # faces whose activations ComfyUI is asked to make room for; restoration sizes its own batches


def model_on_device(handle: GPENModelHandle, faces: int) -> torch.nn.Module:
    """Have ComfyUI load the model on its device, freeing memory (other models) for a batch of faces.

    ``memory_required`` is the model's own activation estimate (``GPEN.estimate_memory``) plus the input/output
    copies, for ``min(faces, RESERVED_BATCH)`` faces; the minimum is one face. ``force_full_load``: GPEN's layers
    are plain torch modules (no ComfyUI weight casting), so a partial "lowvram" load would leave some on the CPU.
    """
    model = handle.patcher.model
    per_face = bytes_per_face(model, handle.size, handle.dtype)
    batch = max(1, min(faces, RESERVED_BATCH))
    mm.load_models_gpu([handle.patcher], memory_required=per_face * batch, minimum_memory_required=per_face,
                       force_full_load=True)
    return handle.patcher.model


class Progress:
    """``on_progress`` / ``check_interrupt`` callables for the pipeline, on a ComfyUI progress bar."""

    def __init__(self, total: int) -> None:
        self.bar = comfy.utils.ProgressBar(max(total, 1))

    def __call__(self, done: int, total: int) -> None:
        self.bar.update_absolute(done, max(total, 1))

    @staticmethod
    def check_interrupt() -> None:
        mm.throw_exception_if_processing_interrupted()


def image_to_pipeline(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``[B, H, W, C]`` (C = 3 or 4; alpha dropped) -> ``[B, 3, H, W]`` float32 0..1."""
    return to_rgb_float(image, channels_last=True)


def image_to_comfy(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ComfyUI IMAGE ``[B, H, W, 3]`` on ComfyUI's intermediate device."""
    return images.permute(0, 2, 3, 1).float().contiguous().to(mm.intermediate_device())


def mask_to_comfy(mask: torch.Tensor) -> torch.Tensor:
    return mask.float().contiguous().to(mm.intermediate_device())
