"""Face-parsing masks with facexlib's ParseNet or BiSeNet, when their weights are in the given folder.

Weights are never downloaded here: ``parsing_parsenet.pth`` (facexlib v0.2.2 release; or the same tensors as
``parsing_parsenet.safetensors``) or ``parsing_bisenet.pth`` (v0.2.0) must be in ``parsing_dir``. A ParseNet's
configuration (widths, depth, steps, labels) is read from its tensors (``parsenet_config.py``), so narrower
ParseNets load too; a file that is not a parser is refused saying what it looks like.

Classes that are not face (background, hat, cloth; and hair for ``parsing_no_hair``) become 0, everything else 1, as
the official pipeline does. Two post-processings: ``parsing`` / ``parsing_no_hair`` clear a 26/512 border, soften
the result with a Gaussian blur whose width follows ``feather`` (a fraction of the crop side, like the other masks)
and multiply it by the feathered rounded rectangle so it is exactly 0 at the crop's border (no seam there);
``parsing_official`` is the official ``mask_postprocess`` (``official_mask.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import FacePipelineError
from ..optional_deps import import_facexlib
from ..weights_file import load_weight_file
from .masks import rounded_rect_mask
from .official_mask import official_mask_postprocess
from .parsenet_config import NotAParseNet, ParseNetConfig, canonical_parsenet_state, infer_parsenet_config, looks_like

PARSING_FILES = {
    "parsenet": ("parsing_parsenet.pth",
                 "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth"),
    "bisenet": ("parsing_bisenet.pth",
                "https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth"),
}
# CelebAMask-HQ label orders of the two networks
_NOT_FACE = {"parsenet": (0, 14, 18), "bisenet": (0, 16, 18)}
_HAIR = {"parsenet": 13, "bisenet": 17}


class ParsingWeightsMissing(FacePipelineError):
    """A parsing mask was asked for, but no parsing weights are in the folder."""


class ParsingWeightsCorrupt(FacePipelineError):
    """The parsing weight file is there but cannot be read, or is not the parsing network's."""


#: other names a parser's weights may have in the folder (the same tensors in another format)
_ALSO = {"parsenet": ("parsing_parsenet.safetensors",)}


def find_parsing_weights(parsing_dir: str | Path | None) -> tuple[str, Path]:
    folder = Path(parsing_dir) if parsing_dir is not None else None
    if folder is not None:
        for kind, (file_name, _url) in PARSING_FILES.items():
            for name in (file_name, *_ALSO.get(kind, ())):
                if (folder / name).is_file():
                    return kind, folder / name
    names = " or ".join(f"{name} ({url})" for name, url in PARSING_FILES.values())
    raise ParsingWeightsMissing(
        f"the parsing mask needs {names} in {folder if folder is not None else 'a parsing folder (none given)'}; "
        f"download one there or choose the rounded_rect or ellipse mask"
    )


@dataclass(frozen=True)
class ParsingNet:
    """A loaded face-parsing network: ``kind`` ("parsenet" or "bisenet") and its module, on the CPU when loaded (a
    host may move it; ``parsing_mask`` runs it where it is)."""

    kind: str
    module: torch.nn.Module
    config: ParseNetConfig | None = None  # a ParseNet's configuration, read from its tensors (None: BiSeNet)


@functools.lru_cache(maxsize=2)
def _load(kind: str, path: str, mtime: float) -> ParsingNet:
    return load_parsing_file(path, kind=kind)


def load_parsing_file(path: str | Path, *, kind: str = "parsenet") -> ParsingNet:
    """The parsing network in the file ``path`` (``.pth`` or ``.safetensors``), on the CPU, in eval mode. A ParseNet
    is built from the configuration its tensors say (``parsenet_config.infer_parsenet_config``: any width, depth and
    number of steps); ``ParsingWeightsCorrupt`` (saying what the file looks like, e.g. a GPEN model) when the file is
    no parser of ``kind``, or is damaged."""
    if kind not in PARSING_FILES:
        raise ValueError(f"unknown parsing network {kind!r}; choose one of {', '.join(PARSING_FILES)}")
    parsing = import_facexlib("facexlib.parsing", needed_for=f"the parsing mask ({kind} network)",
                              instead="the rounded_rect or ellipse mask")
    file_name, url = PARSING_FILES[kind]
    hint = f"from {url} into {Path(path).parent}"
    state = load_weight_file(path, download_hint=hint, error=ParsingWeightsCorrupt)
    config = None
    try:
        tensors = canonical_parsenet_state(state)
        if kind == "parsenet":
            config = infer_parsenet_config(tensors)
            model = parsing.ParseNet(**config.build_kwargs())
        else:
            other = looks_like(tensors)
            if other is not None and not other.startswith("a BiSeNet"):
                raise NotAParseNet(f"not a BiSeNet face parser: this looks like {other}")
            model = parsing.BiSeNet(num_class=19)
    except NotAParseNet as exc:
        raise ParsingWeightsCorrupt(f"{Path(path).name} is not a {kind} face-parsing network: {exc}. The parsing "
                                    f"mask needs {file_name} ({url})") from exc
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}  # float16 files
    try:
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:  # another network's tensors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ParsingWeightsCorrupt(f"{path} does not fit the {kind} parsing network ({first}); is it the right "
                                    f"file? Delete it and download {file_name} again from {url}") from exc
    return ParsingNet(kind=kind, module=model.eval(), config=config)


def load_parsing_net(parsing_dir: str | Path | None) -> ParsingNet:
    """The parsing network from ``parsing_dir`` (cached by file and modification time), on the CPU. Raises
    ``ParsingWeightsMissing`` (naming the files and the folder) when neither weight file is there and
    ``ParsingWeightsCorrupt`` for a damaged one; never downloads. Call it before any work to report both early."""
    kind, path = find_parsing_weights(parsing_dir)
    return _load(kind, str(path), path.stat().st_mtime)


def parse_faces(faces: torch.Tensor, *, net: ParsingNet, keep_hair: bool,
                exact_input: bool = False) -> torch.Tensor:
    """``faces`` ``[F, 3, S, S]`` RGB 0..1 -> ``[F, 1, s, s]`` float32 0/1 face classes (s: the network's output
    side, 512 for the released networks), on the network's device. ``exact_input``: the network's input is built as
    the official ``FaceParse`` does from 8-bit pixels (``round(x * 255) / 255 * 2 - 1`` in float64, then float32)."""
    kind, model = net.kind, net.module
    param = next(model.parameters(), None)
    faces = faces.to(param.device) if param is not None else faces
    device = faces.device
    x = faces.float()
    if x.shape[-1] != 512 or x.shape[-2] != 512:
        x = F.interpolate(x, size=(512, 512), mode="bilinear", align_corners=False, antialias=True)
    if kind == "parsenet":
        x = (torch.round(x.double() * 255) / 255 * 2 - 1).float() if exact_input else x * 2 - 1
    else:
        mean = torch.tensor([0.485, 0.456, 0.406], device=device).reshape(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=device).reshape(1, 3, 1, 1)
        x = (x - mean) / std
    with torch.no_grad():  # a few faces at a time: the network's activations at 512 are large
        labels = torch.cat([model(part)[0].argmax(1, keepdim=True) for part in x.split(4)])  # [F, 1, s, s]
    face = torch.ones_like(labels, dtype=torch.float32)
    excluded = _NOT_FACE[kind] + (() if keep_hair else (_HAIR[kind],))
    for label in excluded:
        face[labels == label] = 0
    return face


def parsing_mask(faces: torch.Tensor, *, parsing_dir: str | Path | None = None, keep_hair: bool,
                 feather: float = 0.1, net: ParsingNet | None = None, official: bool = False) -> torch.Tensor:
    """``faces``: ``[F, 3, S, S]`` RGB 0..1 (the restored crops) -> ``[F, 1, 512, 512]`` soft face masks in 0..1
    (crop space at the parsing network's resolution; resize to S as needed), on the faces' device.

    ``net``: a network from ``load_parsing_net`` that the caller placed on a device itself (ComfyUI's model
    management); without it the network is loaded from ``parsing_dir`` and moved to the faces' device.
    ``official``: the official post-processing (``official_mask.official_mask_postprocess``; ``feather`` unused)
    of a parse run on 8-bit input as the official code's."""
    if net is None:
        net = load_parsing_net(parsing_dir)
        net.module.to(faces.device)
    out_device = faces.device
    face = parse_faces(faces, net=net, keep_hair=keep_hair, exact_input=official)
    device = face.device
    if official:
        return official_mask_postprocess(face).to(out_device)
    border = round(26 / 512 * face.shape[-1])
    face[..., :border, :] = 0
    face[..., -border:, :] = 0
    face[..., :, :border] = 0
    face[..., :, -border:] = 0
    # a blurred edge rises over about 4 sigma: spread it over the feather width (the official double blur with
    # sigma 4 at 512 is about feather 0.04)
    face = _gaussian(face, sigma=max(1.0, feather * face.shape[-1] / 4))
    return (face * rounded_rect_mask(face.shape[-1], feather=min(feather, 0.02), device=device)).clamp_(0, 1).to(
        out_device)


def _gaussian(x: torch.Tensor, *, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.reshape(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.reshape(1, 1, -1, 1))
