"""The StyleGAN2 decoder of GPEN (``generator.*`` in the checkpoint), fed with encoder features instead of noise."""

from __future__ import annotations

import torch
from torch import nn

from .config import GPENConfig
from .interrupt import block_done
from .layers import ConstantInput, EqualLinear, PixelNorm, StyledConv, ToRGB


class Generator(nn.Module):
    """Mapping network + constant input + ``conv1``/``to_rgb1`` at 4x4 + one upsampling step per resolution.

    Registration order (style, input, conv1, to_rgb1, convs, to_rgbs) is the checkpoint's key order.
    """

    def __init__(self, config: GPENConfig) -> None:
        super().__init__()
        style_dim = config.style_dim
        mapping: list[nn.Module] = [PixelNorm()]
        for _ in range(config.n_mlp):
            mapping.append(EqualLinear(in_dim=style_dim, out_dim=style_dim, lr_mul=config.lr_mlp, activate=True))
        self.style = nn.Sequential(*mapping)

        c4 = config.channels(4)
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(in_channels=c4, out_channels=c4, style_dim=style_dim, upsample=False)
        self.to_rgb1 = ToRGB(in_channels=2 * c4, style_dim=style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        previous = c4
        for step in range(config.num_decoder_steps):
            channels = config.channels(2 ** (step + 3))
            # inputs carry the concatenated encoder feature: 2x the previous layer's conv channels
            self.convs.append(StyledConv(in_channels=2 * previous, out_channels=channels, style_dim=style_dim,
                                         upsample=True))
            self.convs.append(StyledConv(in_channels=2 * channels, out_channels=channels, style_dim=style_dim,
                                         upsample=False))
            self.to_rgbs.append(ToRGB(in_channels=2 * channels, style_dim=style_dim, upsample=True))
            previous = channels

    def forward(self, code: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """Reference forward. ``code``: ``[N, style_dim]`` (the encoder's z-like code); ``features``: encoder
        outputs from 4x4 up to SxS. Returns the raw image ``[N, 3, S, S]``."""
        w = self.style(code)  # one w for every layer: no style mixing, no truncation
        out = self.conv1(self.input(code.shape[0]), w, features[0])
        skip = self.to_rgb1(out, w)
        for step, to_rgb in enumerate(self.to_rgbs):
            feature = features[step + 1]
            out = self.convs[2 * step](out, w, feature)
            out = self.convs[2 * step + 1](out, w, feature)
            skip = to_rgb(out, w, skip)
            block_done()
        return skip
