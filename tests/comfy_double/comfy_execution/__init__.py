"""Test double of ComfyUI's ``comfy_execution`` package (see tests/comfy_double/README.md)."""
