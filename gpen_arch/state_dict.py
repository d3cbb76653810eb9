"""What a state dict says: whether it is a GPEN FullGenerator, its config (from tensor shapes only), the keys and
shapes that config means, and what else a file that is not GPEN might be.

A leaf of the package: it imports the config, the errors and the blur kernel, never the model, the fast runtime or
the file formats, so every reader (``formats/loading.py`` for ``.pth``/``.safetensors``, ``formats/onnx_import.py``
for ``.onnx``, ``formats/convert.py``) checks its tensors the same way without importing the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import torch

from .config import GPENConfig
from .errors import ConfigError, NotAGPENCheckpoint
from .ops.upfirdn2d import make_blur_kernel

#: Wrapper keys that hold the generator's state dict, in order of preference (EMA weights first).
WRAPPER_KEYS = ("g_ema", "params_ema", "params", "state_dict")

#: Other networks people keep in the same folders, each by module paths its weights (or ONNX graph) all have: the
#: one table of "what else this file might be" for the error messages (``looks_like``).
LOOKALIKES = (
    ("a GFPGAN face-restoration model", ("stylegan_decoder", "conv_body_first")),
    ("a CodeFormer face-restoration model", ("quantize", "ft_layers")),
    ("a RestoreFormer face-restoration model", ("quantize", "encoder.conv_in")),
    ("a RetinaFace face detector", ("ClassHead", "LandmarkHead")),
    ("an ESRGAN/Real-ESRGAN upscaler", ("conv_first", "RRDB_trunk")),
    ("an ESRGAN/Real-ESRGAN upscaler", ("conv_first", "body.0.rdb1")),
    ("a face-parsing model (ParseNet/BiSeNet)", ("encoder.0", "context_path")),
    ("a Stable Diffusion checkpoint", ("model.diffusion_model",)),
    ("the GPEN discriminator (a -D file), not the generator", ("final_conv", "convs.0.0")),
)

#: The blur kernel's shape (``[1, 3, 3, 1]`` outer product): every ``*.kernel`` buffer.
_KERNEL = (4, 4)


def looks_like(names: Iterable[str]) -> str | None:
    """What the network with these state-dict keys or module paths looks like (an entry of ``LOOKALIKES``), or None.
    A marker matches a name that is it, starts with it as a module path, or holds it between dots."""
    names = set(names)
    for description, markers in LOOKALIKES:
        if all(any(n == m or n.startswith(m + ".") or f".{m}." in f".{n}." for n in names) for m in markers):
            return description
    return None


def unwrap_tensors(state: Mapping, *, wrappers: Iterable[str], arrived: Callable[[str, object], bool]
                   ) -> tuple[dict[str, torch.Tensor], Mapping]:
    """The tensors of a loaded checkpoint ``state``: wrappers (``wrappers``, up to three deep, e.g.
    ``{'state_dict': {'g_ema': ...}}``) are unwrapped until a level where ``arrived(key, value)`` holds for an entry,
    a ``module.`` prefix on every key is stripped, and only tensors are kept. Also returns the mapping it stopped at
    (for a message when no tensor is there). Shared by the GPEN and the face-parsing readers."""
    wrappers = tuple(wrappers)
    current: Mapping = state
    for _ in range(3):
        if any(arrived(str(k), v) for k, v in current.items()):
            break
        inner = next((current[k] for k in wrappers if isinstance(current.get(k), Mapping)), None)
        if inner is None:
            break
        current = inner
    tensors = {str(k): v for k, v in current.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors, current


def canonicalize_state_dict(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """Unwrap ``g_ema`` / ``params_ema`` / ``params`` / ``state_dict``, strip a ``module.`` prefix, keep tensors."""
    if not isinstance(state_dict, Mapping):
        raise NotAGPENCheckpoint(f"expected a state dict (a dict of tensors), got {type(state_dict).__name__}")
    tensors, current = unwrap_tensors(
        state_dict, wrappers=WRAPPER_KEYS,
        arrived=lambda k, v: isinstance(v, torch.Tensor) and k.startswith(("generator.", "module.generator.")))
    if not tensors:
        keys = ", ".join(list(map(str, current.keys()))[:8])
        raise NotAGPENCheckpoint(f"the checkpoint holds no tensors at its top level (keys: {keys or 'none'})")
    return tensors


def infer_config(state_dict: Mapping) -> GPENConfig:
    """The GPENConfig of a (canonical) state dict, from tensor shapes only."""
    sd = canonicalize_state_dict(state_dict)
    needed = ("generator.input.input", "ecd0.0.0.weight", "final_linear.0.weight", "generator.style.1.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        hint = looks_like(sd)
        raise NotAGPENCheckpoint(
            f"not a GPEN checkpoint: missing {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + (f"; this looks like {hint}" if hint else f"; its first keys are {', '.join(list(sd)[:4])}")
        )
    dims = {"generator.input.input": 4, "ecd0.0.0.weight": 4, "generator.style.1.weight": 2}
    wrong = [f"{k} {list(sd[k].shape)}" for k, n in dims.items() if sd[k].dim() != n]
    if wrong:
        raise NotAGPENCheckpoint(f"not a GPEN checkpoint: {wrong[0]} has the wrong number of dimensions")
    encoder_layers = sorted({int(m.group(1)) for k in sd if (m := re.match(r"ecd(\d+)\.", k))})
    if encoder_layers != list(range(len(encoder_layers))):
        raise NotAGPENCheckpoint(f"the encoder layers are not numbered ecd0..ecdN without gaps: found {encoder_layers}")
    size = 2 ** (len(encoder_layers) + 1)
    to_rgbs = len({int(m.group(1)) for k in sd if (m := re.match(r"generator\.to_rgbs\.(\d+)\.", k))})
    if to_rgbs != len(encoder_layers) - 1:
        raise NotAGPENCheckpoint(
            f"encoder and decoder disagree on the size: {len(encoder_layers)} encoder layers mean {size}x{size}, "
            f"but {to_rgbs} decoder steps mean {2 ** (to_rgbs + 2)}x{2 ** (to_rgbs + 2)}"
        )
    if not 16 <= size <= 2048:
        raise NotAGPENCheckpoint(f"{len(encoder_layers)} encoder layers mean a {size}x{size} GPEN; supported: 16..2048")
    n_mlp = len({int(m.group(1)) for k in sd if (m := re.match(r"generator\.style\.(\d+)\.weight$", k))})
    style_dim = int(sd["generator.style.1.weight"].shape[0])
    c4 = int(sd["generator.input.input"].shape[1])
    c_top = int(sd["ecd0.0.0.weight"].shape[0])
    narrow = c4 / 512
    for multiplier in range(1, 9):
        try:
            config = GPENConfig(size=size, channel_multiplier=multiplier, narrow=narrow, style_dim=style_dim,
                                n_mlp=n_mlp)
        except ConfigError as exc:
            raise NotAGPENCheckpoint(f"these GPEN tensors describe an impossible network: {exc}") from exc
        if config.channels(size) == c_top:
            return config
    raise NotAGPENCheckpoint(
        f"no GPEN channel table fits these shapes: {c4} channels at 4x4 but {c_top} at {size}x{size}"
    )


def expected_shapes(config: GPENConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a GPEN with ``config`` and its shape, in checkpoint order (the model's registration
    order: ``generator.*``, ``ecd0 .. ecd{L-2}``, ``final_linear``; ``tests/test_arch_keys.py`` holds it equal to
    ``GPEN(config).state_dict()`` and to the released files' keys)."""
    shapes: dict[str, tuple[int, ...]] = {}
    style_dim = config.style_dim

    def linear(name: str, in_dim: int, out_dim: int) -> None:  # EqualLinear
        shapes[f"{name}.weight"] = (out_dim, in_dim)
        shapes[f"{name}.bias"] = (out_dim,)

    def modulated(name: str, in_channels: int, out_channels: int, kernel: int, upsample: bool) -> None:
        shapes[f"{name}.weight"] = (1, out_channels, in_channels, kernel, kernel)
        if upsample:
            shapes[f"{name}.blur.kernel"] = _KERNEL
        linear(f"{name}.modulation", style_dim, in_channels)

    def styled(name: str, in_channels: int, out_channels: int, upsample: bool) -> None:  # StyledConv
        modulated(f"{name}.conv", in_channels, out_channels, 3, upsample)
        shapes[f"{name}.noise.weight"] = (1,)
        shapes[f"{name}.activate.bias"] = (2 * out_channels,)  # after the concatenated encoder feature

    def to_rgb(name: str, in_channels: int, upsample: bool) -> None:
        shapes[f"{name}.bias"] = (1, 3, 1, 1)
        if upsample:
            shapes[f"{name}.upsample.kernel"] = _KERNEL
        modulated(f"{name}.conv", in_channels, 3, 1, False)

    for i in range(1, config.n_mlp + 1):  # style.0 is the PixelNorm
        linear(f"generator.style.{i}", style_dim, style_dim)
    c4 = config.channels(4)
    shapes["generator.input.input"] = (1, c4, 4, 4)
    styled("generator.conv1", c4, c4, False)
    to_rgb("generator.to_rgb1", 2 * c4, False)
    previous, steps = c4, []
    for step in range(config.num_decoder_steps):
        channels = config.channels(2 ** (step + 3))
        steps.append((previous, channels))
        previous = channels
    for step, (before, channels) in enumerate(steps):  # all convs, then all to_rgbs (two ModuleLists)
        styled(f"generator.convs.{2 * step}", 2 * before, channels, True)
        styled(f"generator.convs.{2 * step + 1}", 2 * channels, channels, False)
    for step, (_, channels) in enumerate(steps):
        to_rgb(f"generator.to_rgbs.{step}", 2 * channels, True)

    size = config.size
    shapes["ecd0.0.0.weight"] = (config.channels(size), 3, 1, 1)
    shapes["ecd0.0.1.bias"] = (config.channels(size),)
    for i in range(1, config.num_encoder_layers):
        resolution = size // 2**i
        out_channels = config.channels(resolution)
        shapes[f"ecd{i}.0.0.kernel"] = _KERNEL
        shapes[f"ecd{i}.0.1.weight"] = (out_channels, config.channels(resolution * 2), 3, 3)
        shapes[f"ecd{i}.0.2.bias"] = (out_channels,)
    linear("final_linear.0", c4 * 4 * 4, style_dim)
    return shapes


def check_state_dict(state_dict: Mapping[str, torch.Tensor], config: GPENConfig) -> dict[str, torch.Tensor]:
    """``state_dict`` (canonical) held against a GPEN of ``config``: every key, no other key, every shape. Returns a
    copy with the constant blur kernels filled in where a conversion dropped them; raises ``NotAGPENCheckpoint``
    naming the first missing, unexpected and mis-shaped key (and what the file looks like instead)."""
    expected = expected_shapes(config)
    sd = dict(state_dict)
    for key in expected:  # the blur kernels are constants; fill them in when a conversion dropped them
        if key.endswith(".kernel") and key not in sd:
            gain = 1.0 if key.startswith("ecd") else 4.0
            sd[key] = make_blur_kernel(gain=gain)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {list(sd[k].shape)} (expected {list(expected[k])})"
             for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        problems.append(f"unexpected {unexpected[0]}"
                        + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    if wrong:
        problems.append(f"shape mismatch {wrong[0]}" + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    if problems:
        hint = looks_like(sd)
        raise NotAGPENCheckpoint(
            f"not a GPEN-{config.size} FullGenerator checkpoint: " + "; ".join(problems)
            + (f"; this looks like {hint}" if hint else "")
        )
    return sd
