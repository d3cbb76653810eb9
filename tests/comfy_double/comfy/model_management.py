"""Test double of ``comfy.model_management``: CPU only, records model loads and memory requests, can simulate an
interrupt, a given amount of free memory and unloading every model (as ComfyUI does when others need the room)."""

import torch

load_calls = []  # (patchers, memory_required, minimum_memory_required, force_full_load)
free_calls = []  # (memory_required, device) of free_memory
loaded = []  # patchers currently "on the device"
unloaded = []  # patchers unloaded by unload_all_models
interrupt = False
free_bytes = None  # what get_free_memory answers (None: plenty)
soft_empty_calls = 0
OOM_EXCEPTION = torch.cuda.OutOfMemoryError


class InterruptProcessingException(Exception):
    pass


def get_torch_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    return False


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    return False


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    load_calls.append((list(models), memory_required, minimum_memory_required, force_full_load))
    for patcher in models:
        patcher.model.to(patcher.load_device)
        if patcher not in loaded:
            loaded.append(patcher)


def free_memory(memory_required, device, keep_loaded=[]):  # noqa: B006 - ComfyUI's signature
    free_calls.append((memory_required, device))


def get_free_memory(dev=None, torch_free_too=False):
    free = (1 << 40) if free_bytes is None else free_bytes
    return (free, free) if torch_free_too else free


def soft_empty_cache(force=False):
    global soft_empty_calls
    soft_empty_calls += 1


def unload_all_models():
    """As ComfyUI does when another model needs the memory: every loaded model goes to its offload device."""
    for patcher in loaded:
        patcher.model.to(patcher.offload_device)
        unloaded.append(patcher)
    loaded.clear()


def throw_exception_if_processing_interrupted():
    global interrupt
    if interrupt:
        interrupt = False
        raise InterruptProcessingException()
