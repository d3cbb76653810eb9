"""Everything that touches ComfyUI's own modules: model folders, devices and dtypes, loading models on ComfyUI's
model management, progress bars, cancel, and tensor layout at the node boundary.

ComfyUI's IMAGE is ``[B, H, W, C]`` float 0..1 and MASK ``[B, H, W]``; the face pipeline works on
``[B, 3, H, W]``.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths

from ..face_pipeline.image import to_rgb_float
from ..face_pipeline.memory import MemoryPolicy, is_out_of_memory
from ..face_pipeline.restoration.batching import bytes_per_face, faces_per_step
from ..gpen_arch import SUPPORTED_SUFFIXES, GPENError, canonicalize_state_dict, infer_config, load_gpen, model_bytes
from ..gpen_arch import read_state_dict
from ..gpen_arch.checkpoint_file import peek_torch_file
from ..gpen_arch.onnx_import import onnx_not_gpen_reason
from ..gpen_arch.precision import PRECISIONS  # noqa: F401  (the loader node's choices)
from ..gpen_arch.precision import choose_dtype as _choose_dtype
from .handles import GPENModelHandle

logger = logging.getLogger(__name__)

GPEN_FOLDERS = ("gpen", "facerestore_models")  # facerestore_models: where ReActor/facerestore_cf users keep GPEN
DETECTOR_FOLDER = "facedetection"


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


_NOT_GPEN: dict[tuple[str, int, int], str | None] = {}  # (path, size, mtime) -> why it is not GPEN, or None


def _safetensors_shapes(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file as shape-only (meta) tensors: its header is all that is read. A file
    safetensors cannot open goes through ``read_state_dict``, which names what is wrong with it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            return {k: torch.empty(handle.get_slice(k).get_shape(), device="meta") for k in handle.keys()}
    except SafetensorError:
        return read_state_dict(path)


def not_gpen_reason(path: str) -> str | None:
    """Why the file at ``path`` is surely not a GPEN generator (e.g. "this looks like GFPGAN"), or None when it is
    one or cannot be told (it stays listed and loading explains). Reads the tensor names and shapes only (the
    safetensors header; memory-mapped for the zip format; the legacy format is read whole once), cached by size and
    modification time."""
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _NOT_GPEN:
        reason = None
        if os.path.splitext(path)[1].lower() in (".pth", ".pt", ".bin", ".safetensors"):
            try:
                if path.lower().endswith(".safetensors"):
                    state = _safetensors_shapes(path)
                else:
                    state = peek_torch_file(path)
                infer_config(canonicalize_state_dict(state))
            except GPENError as exc:
                reason = str(exc)
            except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
                # unreadable here (legacy format, corrupt): listed, and loading it explains
                logger.debug("could not inspect %s for the model list: %s", path, exc)
        if path.lower().endswith(".onnx"):  # a quick look at the graph, no weights converted
            reason = onnx_not_gpen_reason(path)
        _NOT_GPEN[key] = reason
    return _NOT_GPEN[key]


def list_gpen_files() -> list[str]:
    """GPEN checkpoints the loader can read, from every GPEN model folder. Files that are surely something else
    (GFPGAN, CodeFormer, RestoreFormer, ... kept in models/facerestore_models by other packs) are left out."""
    names: set[str] = set()
    for folder in GPEN_FOLDERS:
        try:
            names.update(folder_paths.get_filename_list(folder))
        except KeyError:
            continue
    listed = []
    for name in sorted(n for n in names if os.path.splitext(n)[1].lower() in SUPPORTED_SUFFIXES):
        reason = not_gpen_reason(gpen_file_path(name))
        if reason is None:
            listed.append(name)
        else:
            logger.debug("not listing %s: %s", name, reason)
    return listed


def gpen_file_path(name: str) -> str:
    for folder in GPEN_FOLDERS:
        try:
            path = folder_paths.get_full_path(folder, name)
        except KeyError:
            continue
        if path:
            return path
    folders = ", ".join(p for f in GPEN_FOLDERS for p in folder_paths.folder_names_and_paths.get(f, ([], None))[0])
    raise FileNotFoundError(f"GPEN model {name!r} not found in {folders}; put the .pth/.safetensors/.onnx file there")


def _is_oom(exc: BaseException) -> bool:
    """ComfyUI's own test where it has one, else its OOM exception type; the CPU allocator's failures (which have no
    type of their own) as the pipeline recognises them."""
    checker = getattr(mm, "is_oom", None)
    if callable(checker):
        return bool(checker(exc))
    oom = getattr(mm, "OOM_EXCEPTION", None)
    if isinstance(oom, type) and oom is not Exception and isinstance(exc, oom):
        return True
    return is_out_of_memory(exc)


#: every memory decision of the pipeline inside ComfyUI goes through ComfyUI's model management
MEMORY = MemoryPolicy(free_bytes=lambda device: int(mm.get_free_memory(device)), is_oom=_is_oom,
                      release=lambda device: mm.soft_empty_cache())


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
        return _choose_dtype(precision, device)
    return _choose_dtype(precision, device, fp16=mm.should_use_fp16(device), bf16=mm.should_use_bf16(device))


def load_gpen_model(name: str, precision: str, *, cuda_graphs: bool = False) -> GPENModelHandle:
    path = gpen_file_path(name)
    device = compute_device()
    dtype = choose_dtype(precision, device)
    model = load_gpen(read_state_dict(path), device=mm.unet_offload_device(), dtype=dtype)
    # graphs run on CUDA only; the graph is dropped whenever ComfyUI moves the model
    model.fast_options = model.fast_options.replace(cuda_graphs=bool(cuda_graphs))
    # the folded weights the fast forward derives on the GPU live with the model: ComfyUI must make room for them too
    size = model_bytes(model) + model.derived_weight_bytes(device)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=mm.unet_offload_device(),
                                               size=size)
    logger.info("loaded %s: GPEN-%d, %s", name, model.config.size, dtype)
    return GPENModelHandle(patcher=patcher, file_name=name, size=model.config.size, dtype=dtype)


def model_on_device(handle: GPENModelHandle, faces: int) -> torch.nn.Module:
    """Have ComfyUI load the model on its device, freeing memory (other models) for one restore step of faces.

    ``memory_required`` is the model's own activation estimate (``GPEN.estimate_memory``) plus the input/output
    copies, for as many faces as one forward takes (``faces_per_step``: the batch restoration then sizes from
    ComfyUI's free memory, ``MEMORY``); the minimum is one face. ``force_full_load``: GPEN's layers are plain torch
    modules (no ComfyUI weight casting), so a partial "lowvram" load would leave some on the CPU.
    """
    per_face = bytes_per_face(handle.patcher.model, handle.size, handle.dtype)
    mm.load_models_gpu([handle.patcher], memory_required=restore_step_bytes(handle, faces),
                       minimum_memory_required=per_face, force_full_load=True)
    return handle.patcher.model


def restore_step_bytes(handle: GPENModelHandle, faces: int) -> int:
    """Working bytes of one restore step of up to ``faces`` faces (``faces_per_step`` on the model's device)."""
    per_face = bytes_per_face(handle.patcher.model, handle.size, handle.dtype)
    return per_face * max(1, min(faces, faces_per_step(handle.patcher.load_device)))


def module_patcher(module: torch.nn.Module | None) -> object | None:
    """A ModelPatcher for a helper network (a face detector, a parsing network), built on the offload device, so
    ComfyUI loads it to its device when a node needs it and offloads it like its other models."""
    if module is None:
        return None
    module.to(mm.unet_offload_device())
    return comfy.model_patcher.ModelPatcher(module, load_device=compute_device(),
                                            offload_device=mm.unet_offload_device(), size=model_bytes(module))


def load_on_device(patchers: list, memory_required: int = 0, keep: list = ()) -> None:
    """Have ComfyUI load these patchers (None entries skipped) and free ``memory_required`` bytes beside them,
    without offloading the already loaded ``keep`` patchers (the GPEN model of a streamed restore and paste)."""
    wanted = [p for p in patchers if p is not None]
    if wanted:
        mm.load_models_gpu([*wanted, *keep], memory_required=memory_required, force_full_load=True)
    elif memory_required:
        mm.free_memory(memory_required, compute_device(), keep_loaded=list(keep))


_PARSING: dict[tuple[str, float], tuple[object, object]] = {}  # (path, mtime) -> (ParsingNet, its ModelPatcher)


def parsing_net_on_device(folder: str | None, memory_required: int = 0, keep: list = ()):
    """The face-parsing network from ``folder`` under ComfyUI's model management, loaded to its device (with
    ``memory_required`` more bytes freed for the paste that uses it, the ``keep`` patchers left loaded)."""
    from ..face_pipeline.paste.parsing import find_parsing_weights, load_parsing_net

    _kind, path = find_parsing_weights(folder)
    key = (str(path), path.stat().st_mtime)
    if key not in _PARSING:
        _PARSING.clear()  # a replaced file: forget the old network
        net = load_parsing_net(folder)
        _PARSING[key] = (net, module_patcher(net.module))
    net, patcher = _PARSING[key]
    load_on_device([patcher], memory_required, keep=keep)
    return net


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
