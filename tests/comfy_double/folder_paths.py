"""Test double of ComfyUI's ``folder_paths``: set ``models_dir`` before the pack is imported."""

import os

models_dir = os.path.join(os.getcwd(), "models")
supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths = {}


def add_model_folder_path(folder_name, full_folder_path, is_default=False):
    """As in ComfyUI: append (or, with is_default, put first) a folder; a new name starts with no extension filter."""
    if folder_name not in folder_names_and_paths:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())
        return
    paths = folder_names_and_paths[folder_name][0]
    if full_folder_path in paths:
        if is_default:
            paths.remove(full_folder_path)
            paths.insert(0, full_folder_path)
    elif is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name):
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name):
    paths, extensions = folder_names_and_paths[folder_name]
    names = set()
    for folder in paths:
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if os.path.isfile(os.path.join(folder, name)) and (
                        not extensions or os.path.splitext(name)[1].lower() in extensions):
                    names.add(name)
    return sorted(names)


def get_full_path(folder_name, filename):
    for folder in folder_names_and_paths[folder_name][0]:
        path = os.path.join(folder, filename)
        if os.path.isfile(path):
            return path
    return None
