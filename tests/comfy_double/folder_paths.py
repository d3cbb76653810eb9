"""Test double of ComfyUI's ``folder_paths``: set ``models_dir`` before the pack is imported."""

import os

models_dir = os.path.join(os.getcwd(), "models")
supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths = {}


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
