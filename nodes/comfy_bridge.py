"""Everything that touches ComfyUI's own modules: model folders, devices and dtypes, loading models on ComfyUI's
model management, progress bars, cancel, warnings shown in the frontend, and tensor layout at the node boundary.

ComfyUI's IMAGE is ``[B, H, W, C]`` float 0..1 and MASK ``[B, H, W]``; the face pipeline works on
``[B, 3, H, W]``. What upstream nodes produce is taken as they produce it: values a resampler's overshoot puts
outside 0..1 (a bicubic upscale rings to about -0.2..1.2) are clipped, up to ``OVERSHOOT_TOLERANCE``; beyond that
the input is refused with the convention it looks like (0..255, -1..1). An alpha channel is kept through the nodes
that return the image.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping, Sequence

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch
from server import PromptServer

from ..face_pipeline.image import OVERSHOOT_TOLERANCE, check_unit_range, to_rgb_float
from ..face_pipeline.memory import MemoryPolicy, is_out_of_memory
from ..face_pipeline.region import masks_for
from ..face_pipeline.restoration.batching import bytes_per_face, faces_per_step
from ..gpen_arch import (
    SUPPORTED_SUFFIXES,
    GPENError,
    canonicalize_state_dict,
    infer_config,
    load_gpen_file,
    model_bytes,
)
from ..gpen_arch.formats.checkpoint_file import peek_torch_file
from ..gpen_arch.formats.file_scan import inspect_weight_file
from ..gpen_arch.formats.loading import DOWNLOAD_HINT
from ..gpen_arch.formats.onnx_import import onnx_not_gpen_reason
from ..gpen_arch.runtime.precision import PRECISIONS  # noqa: F401  (the loader node's choices)
from ..gpen_arch.runtime.precision import choose_dtype as _choose_dtype
from .handles import GPENModelHandle

try:  # ComfyUI 0.3.44 and later: which node is running (the frontend's toast names it)
    from comfy_execution.utils import get_executing_context
except ImportError:
    get_executing_context = None

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


_NOT_GPEN: dict[tuple[str, int, int, int], str | None] = {}  # (path, size, mtime, ctime) -> why not offered


def _safetensors_shapes(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file as shape-only (meta) tensors: its header is all that is read (after
    ``inspect_weight_file`` held it to the budgets)."""
    from safetensors import safe_open

    inspect_weight_file(path, download_hint=DOWNLOAD_HINT)
    with safe_open(path, framework="pt") as handle:
        return {k: torch.empty(handle.get_slice(k).get_shape(), device="meta") for k in handle.keys()}


def _inspect_for_list(path: str) -> str | None:
    """Why the file at ``path`` is not offered (not a regular file, refused by the budgets, unreadable, surely not a
    GPEN generator), or None to offer it. Reads at most the zip directory and its pickle (``MAX_PICKLE_BYTES``), the
    safetensors header or, for .onnx, the graph without its weights; never opens a FIFO, never allocates a tensor
    (zip and legacy checkpoints are unpickled with their tensors on the meta device)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".onnx":
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        return onnx_not_gpen_reason(path)
    state: object
    if suffix in (".safetensors",):
        state = _safetensors_shapes(path)
    else:
        state = peek_torch_file(path, download_hint=DOWNLOAD_HINT)
        if state is None:
            return None
    if not isinstance(state, Mapping):
        return f"holds a {type(state).__name__}, not a state dict"
    infer_config(canonicalize_state_dict(state))
    return None


def not_gpen_reason(path: str) -> str | None:
    """Why the file at ``path`` is not offered in the model list (see ``_inspect_for_list``), or None to offer it;
    cached by size, modification and status-change time. Never raises: whatever a file holds, the list is built
    (``/object_info`` must always answer), and the reason is logged at debug level."""
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:  # a broken symlink, no permission, a NUL byte in the name
        return f"cannot be read: {getattr(exc, 'strerror', None) or exc}"
    key = (path, info.st_size, info.st_mtime_ns, info.st_ctime_ns)  # ctime: a chmod makes a file readable
    if key not in _NOT_GPEN:
        try:
            reason = _inspect_for_list(path)
        except GPENError as exc:
            reason = str(exc)
        except (OSError, ValueError) as exc:
            reason = f"cannot be read: {getattr(exc, 'strerror', None) or exc}"
        except Exception as exc:  # noqa: BLE001 - one odd file must never hide the loader node (see the doc)
            reason = f"cannot be inspected ({type(exc).__name__}: {str(exc)[:200]})"
        if len(_NOT_GPEN) > 4096:  # files replaced many times: forget the old entries
            _NOT_GPEN.clear()
        _NOT_GPEN[key] = reason
    return _NOT_GPEN[key]


def list_gpen_files() -> list[str]:
    """GPEN checkpoints the loader can read, from every GPEN model folder. Files that are surely something else
    (GFPGAN, CodeFormer, RestoreFormer, ... kept in models/facerestore_models by other packs), that the budgets refuse
    or that cannot be read are left out with a debug-level reason; this never raises."""
    names: set[str] = set()
    for folder in GPEN_FOLDERS:
        try:
            names.update(folder_paths.get_filename_list(folder))
        except (KeyError, OSError) as exc:
            logger.debug("cannot list the %s folder: %s", folder, exc)
    listed = []
    for name in sorted(n for n in names if os.path.splitext(n)[1].lower() in SUPPORTED_SUFFIXES):
        try:
            path = gpen_file_path(name)
        except (FileNotFoundError, OSError, ValueError) as exc:  # e.g. a broken symlink, which ComfyUI lists
            logger.debug("not listing %s: %s", name, exc)
            continue
        reason = not_gpen_reason(path)
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
    model = load_gpen_file(path, device=mm.unet_offload_device(), dtype=dtype)  # errors name the file
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


def load_on_device(patchers: list, memory_required: int = 0, keep: Sequence = ()) -> None:
    """Have ComfyUI load these patchers (None entries skipped) and free ``memory_required`` bytes beside them,
    without offloading the already loaded ``keep`` patchers (the GPEN model of a streamed restore and paste)."""
    wanted = [p for p in patchers if p is not None]
    if wanted:
        mm.load_models_gpu([*wanted, *keep], memory_required=memory_required, force_full_load=True)
    elif memory_required:
        mm.free_memory(memory_required, compute_device(), keep_loaded=list(keep))


_PARSING: dict[tuple[str, float], tuple[object, object]] = {}  # (path, mtime) -> (ParsingNet, its ModelPatcher)


def parsing_net_on_device(folder: str | None, memory_required: int = 0, keep: Sequence = ()):
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


#: the frontend event of ``warn_user`` (web/gpen_warnings.js shows it as a toast)
WARNING_EVENT = "gpen.warning"


def warn_user(message: str) -> None:
    """Something that changes what the user gets (a face index that does not exist, a model made for another mode):
    logged, and sent to the frontend of the client that queued the prompt (``WARNING_EVENT``, with the running node's
    id), where the pack's extension shows it as a toast. Without a running server it is only logged."""
    logger.warning(message)
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return
    context = get_executing_context() if get_executing_context is not None else None
    server.send_sync(WARNING_EVENT, {"message": message, "node": None if context is None else context.node_id},
                     getattr(server, "client_id", None))


def image_to_pipeline(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """ComfyUI IMAGE ``[B, H, W, C]`` (C = 1 to 4; alpha set aside, see ``image_alpha``) -> ``[B, 3, H, W]`` float32
    0..1; a resampler's overshoot clipped, another convention (0..255, -1..1) refused naming the input ``name``."""
    return to_rgb_float(image, channels_last=True, tolerance=OVERSHOOT_TOLERANCE, what=f"the {name} input")


def image_alpha(image: torch.Tensor, name: str = "image") -> torch.Tensor | None:
    """The alpha channel ``[B, H, W]`` float32 0..1 of an IMAGE with 2 (gray + alpha) or 4 (RGBA) channels (clipped
    like the colours), else None."""
    if image.dim() != 4 or image.shape[-1] not in (2, 4):
        return None
    return mask_to_pipeline(image[..., -1], f"{name} (its alpha channel)")


def mask_to_pipeline(mask: torch.Tensor | None, name: str) -> torch.Tensor | None:
    """A MASK input as the pipeline takes it: float32, a resampler's overshoot clipped to 0..1, another convention
    refused naming the input ``name``; None stays None."""
    if mask is None:
        return None
    mask = mask.float()
    check_unit_range(mask, tolerance=OVERSHOOT_TOLERANCE, what=f"the {name} input")
    return mask.clamp(0, 1)


def image_to_comfy(images: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ComfyUI IMAGE ``[B, H, W, 3]`` on ComfyUI's intermediate device; with ``alpha``
    (``[B, h, w]`` or one for all, any size: resized to the images) ``[B, H, W, 4]`` RGBA."""
    rgb = images.permute(0, 2, 3, 1).float()
    if alpha is not None:
        batch, _, height, width = images.shape
        alpha = masks_for(alpha.to(images.device), batch=batch, size=(height, width), what="alpha channel")
        rgb = torch.cat([rgb, alpha[..., None].to(rgb.dtype)], dim=-1)  # [B, H, W, 4]
    return rgb.contiguous().to(mm.intermediate_device())


def mask_to_comfy(mask: torch.Tensor) -> torch.Tensor:
    return mask.float().contiguous().to(mm.intermediate_device())
