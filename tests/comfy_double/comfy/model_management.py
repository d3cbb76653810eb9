"""Test double of ``comfy.model_management``: CPU only, records model loads, can simulate an interrupt."""

import torch

load_calls = []  # (patchers, memory_required, minimum_memory_required, force_full_load)
interrupt = False


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


def throw_exception_if_processing_interrupted():
    global interrupt
    if interrupt:
        interrupt = False
        raise InterruptProcessingException()
