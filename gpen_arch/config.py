"""GPENConfig: the hyper-parameters of a GPEN FullGenerator, and the channel table they imply."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError

#: Base channel counts per resolution before ``channel_multiplier`` and ``narrow`` (docs/network.md, channel table).
_BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512}
_MULTIPLIED_BASE = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16, 2048: 8}

MIN_SIZE = 16
MAX_SIZE = 2048


@dataclass(frozen=True)
class GPENConfig:
    """Hyper-parameters of a GPEN FullGenerator (always built with ``isconcat=True`` and blur ``[1, 3, 3, 1]``).

    ``size`` is the square input/output side (a power of two, 16..2048). The released GPEN-BFR models are
    256 (cm 1, narrow 0.5) and 512/1024/2048 (cm 2, narrow 1); see ``RELEASED_CONFIGS``.
    """

    size: int
    channel_multiplier: int = 2
    narrow: float = 1.0
    style_dim: int = 512
    n_mlp: int = 8
    lr_mlp: float = 0.01

    def __post_init__(self) -> None:
        size = self.size
        if not isinstance(size, int) or size < MIN_SIZE or size > MAX_SIZE or size & (size - 1):
            raise ConfigError(
                f"GPEN size must be a power of two between {MIN_SIZE} and {MAX_SIZE}; got {size!r}"
            )
        if not isinstance(self.channel_multiplier, int) or self.channel_multiplier < 1:
            raise ConfigError(f"channel_multiplier must be a positive integer; got {self.channel_multiplier!r}")
        if not (0 < self.narrow <= 4):
            raise ConfigError(f"narrow must be in (0, 4]; got {self.narrow!r}")
        if self.style_dim < 1 or self.n_mlp < 1:
            raise ConfigError(f"style_dim and n_mlp must be positive; got {self.style_dim}, {self.n_mlp}")
        if self.channels(self.size) < 1 or self.channels(4) < 1:
            raise ConfigError(
                f"narrow={self.narrow} leaves no channels at resolution {self.size} "
                f"(channel_multiplier={self.channel_multiplier})"
            )

    @property
    def log_size(self) -> int:
        """L = log2(size)."""
        return int(math.log2(self.size))

    def channels(self, resolution: int) -> int:
        """C(r): feature channels at ``resolution`` (same table for encoder and decoder; ``int`` truncates)."""
        if resolution in _BASE_CHANNELS:
            base = _BASE_CHANNELS[resolution]
        elif resolution in _MULTIPLIED_BASE:
            base = _MULTIPLIED_BASE[resolution] * self.channel_multiplier
        else:
            raise ConfigError(f"no channel count for resolution {resolution}")
        return int(base * self.narrow)

    @property
    def num_encoder_layers(self) -> int:
        """ecd0 .. ecd{L-2}: one 1x1 input layer plus L-2 downsampling layers."""
        return self.log_size - 1

    @property
    def num_decoder_steps(self) -> int:
        """Upsampling steps 8 .. size (each has two StyledConvs and one ToRGB)."""
        return self.log_size - 2


#: The configurations the official entry points build for the released GPEN-BFR checkpoints (docs/network.md).
RELEASED_CONFIGS = {
    256: GPENConfig(size=256, channel_multiplier=1, narrow=0.5),
    512: GPENConfig(size=512, channel_multiplier=2, narrow=1.0),
    1024: GPENConfig(size=1024, channel_multiplier=2, narrow=1.0),
    2048: GPENConfig(size=2048, channel_multiplier=2, narrow=1.0),
}
