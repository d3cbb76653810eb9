"""What a ParseNet state dict says: its configuration, from tensor shapes and key names only (as ``gpen_arch``
reads a GPEN's), and what a file that is not a ParseNet looks like instead.

ParseNet (the face parser of the official GPEN code, also ``facexlib.parsing.ParseNet``) is an encoder of
``down_steps`` residual blocks after a first 3x3 conv of ``base_ch`` channels, ``res_depth`` residual blocks, a
decoder of ``up_steps`` blocks and two heads (``out_img_conv``: 3 channels; ``out_mask_conv``: ``parsing_ch``
labels). Channels double (encoder) and halve (decoder) from ``base_ch``, clipped to ``ch_range``. The released
network is ``base_ch=64, ch_range=(32, 256)``, 4 down and 4 up steps, depth 10, 19 labels, batch norm, LeakyReLU;
narrower ones (test data, distilled parsers) differ only in widths, which the shapes say.

Nothing here is guessed from a file name: ``infer_parsenet_config`` reads the keys, and the network built from the
result is then loaded strictly, so a file whose shapes fit no ParseNet is refused naming the first wrong tensor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..weights_file import looks_like as shared_looks_like
from ..weights_file import unwrap_tensors

PARSE_SIZE = 512  # the side the parser is run at (the official FaceParse resizes every crop to it)

# networks given as a parser by mistake that need advice of their own here: (description, key prefixes all present);
# every other network is named by gpen_arch's one table of lookalikes (``state_dict.LOOKALIKES``)
_OTHER_NETWORKS = (
    ("a GPEN face-restoration model (give it as the GPEN model, not as the parser)", ("generator.", "ecd0.")),
    ("a BiSeNet face parser (name it parsing_bisenet.pth)", ("cp.", "ffm.")),
)


class NotAParseNet(ValueError):
    """A state dict that is not a ParseNet: the message says what is missing and what the file looks like."""


@dataclass(frozen=True)
class ParseNetConfig:
    """A ParseNet's hyper-parameters, all read from its tensors (see the module doc)."""

    base_ch: int
    ch_range: tuple[int, int]  # (smallest, largest) channel count after clipping; any wider range builds the same net
    down_steps: int
    up_steps: int
    res_depth: int
    parsing_ch: int
    norm_type: str  # "bn" (released), "gn" or "none"
    relu_type: str  # "LeakyReLU" (released) or "prelu"; LeakyReLU and ReLU have no weights: LeakyReLU is assumed

    @property
    def out_size(self) -> int:
        """The side of the label map for a ``PARSE_SIZE`` input."""
        return PARSE_SIZE * 2 ** self.up_steps // 2 ** self.down_steps

    def build_kwargs(self) -> dict:
        """The keyword arguments of ``facexlib.parsing.ParseNet`` that build this network at ``PARSE_SIZE``."""
        min_feat = PARSE_SIZE // 2 ** self.down_steps
        return {"in_size": PARSE_SIZE, "out_size": min_feat * 2 ** self.up_steps, "min_feat_size": min_feat,
                "base_ch": self.base_ch, "parsing_ch": self.parsing_ch, "res_depth": self.res_depth,
                "relu_type": self.relu_type, "norm_type": self.norm_type, "ch_range": list(self.ch_range)}


def canonical_parsenet_state(state: object) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file: unwrap ``params`` / ``state_dict`` / ``model``, strip a ``module.`` prefix."""
    if not isinstance(state, Mapping):
        raise NotAParseNet(f"expected a state dict (a dict of tensors), found a {type(state).__name__}")
    tensors, current = unwrap_tensors(state, wrappers=("params", "state_dict", "model", "params_ema"),
                                      arrived=lambda _k, v: isinstance(v, torch.Tensor))
    if not tensors:
        keys = ", ".join(list(map(str, current.keys()))[:8])
        raise NotAParseNet(f"the file holds no tensors at its top level (keys: {keys or 'none'}); expected a "
                           f"ParseNet state dict")
    return tensors


def looks_like(keys) -> str | None:
    """What another network with these keys is (the two above, else ``gpen_arch.state_dict.looks_like``), or None."""
    keys = list(keys)
    for description, prefixes in _OTHER_NETWORKS:
        if all(any(k.startswith(p) for k in keys) for p in prefixes):
            return description
    return shared_looks_like(keys)


def _blocks(sd: Mapping[str, torch.Tensor], part: str) -> list[int]:
    return sorted({int(m.group(1)) for k in sd if (m := re.match(rf"{part}\.(\d+)\.", k))})


def _out_channels(sd: Mapping[str, torch.Tensor], key: str) -> int:
    return int(sd[key].shape[0])


def infer_parsenet_config(state: Mapping[str, torch.Tensor]) -> ParseNetConfig:
    """The ``ParseNetConfig`` of a canonical state dict; ``NotAParseNet`` (naming the missing key and what the
    tensors look like instead) for anything else."""
    sd = canonical_parsenet_state(state)
    needed = ("encoder.0.conv2d.weight", "body.0.conv1.conv2d.weight", "out_mask_conv.conv2d.weight",
              "out_img_conv.conv2d.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        hint = looks_like(sd)
        raise NotAParseNet(f"not a ParseNet: missing {missing[0]}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                           + (f"; this looks like {hint}" if hint
                              else f"; its first keys are {', '.join(list(sd)[:4])}"))
    wrong = [k for k in needed if sd[k].dim() != 4]
    if wrong:
        raise NotAParseNet(f"not a ParseNet: {wrong[0]} is {list(sd[wrong[0]].shape)}, expected a 4-d conv weight")
    encoder, body, decoder = _blocks(sd, "encoder"), _blocks(sd, "body"), _blocks(sd, "decoder")
    for name, found in (("encoder", encoder), ("body", body), ("decoder", decoder)):
        if found != list(range(len(found))):
            raise NotAParseNet(f"not a ParseNet: its {name} blocks are not numbered 0..N without gaps: {found}")
    down_steps, up_steps = len(encoder) - 1, len(decoder)
    if not 0 <= down_steps <= 8 or up_steps > 8 or PARSE_SIZE % 2 ** down_steps:
        raise NotAParseNet(f"not a ParseNet this pack can run: {down_steps} down and {up_steps} up steps")
    # every channel count after clipping: the encoder and body blocks' outputs, the decoder's, the heads' inputs
    clipped = [_out_channels(sd, f"{part}.{i}.conv1.conv2d.weight") for part, ids in
               (("encoder", encoder[1:]), ("body", body), ("decoder", decoder)) for i in ids
               if f"{part}.{i}.conv1.conv2d.weight" in sd]
    clipped += [int(sd["encoder.1.conv1.conv2d.weight"].shape[1])] if "encoder.1.conv1.conv2d.weight" in sd else []
    clipped += [int(sd["out_mask_conv.conv2d.weight"].shape[1])]
    norm_type = ("bn" if any(k.endswith("norm.norm.running_mean") for k in sd)
                 else "gn" if any(k.endswith("norm.norm.weight") for k in sd) else "none")
    relu_type = "prelu" if any(k.endswith("relu.func.weight") for k in sd) else "LeakyReLU"
    return ParseNetConfig(base_ch=_out_channels(sd, "encoder.0.conv2d.weight"), ch_range=(min(clipped), max(clipped)),
                          down_steps=down_steps, up_steps=up_steps, res_depth=len(body),
                          parsing_ch=_out_channels(sd, "out_mask_conv.conv2d.weight"), norm_type=norm_type,
                          relu_type=relu_type)
