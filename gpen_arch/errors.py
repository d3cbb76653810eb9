"""Exceptions raised by gpen_arch. Every message says what was expected, what was found and what to do."""

from __future__ import annotations


class GPENError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointReadError(GPENError):
    """The file could not be read as a checkpoint at all (missing, empty, truncated, corrupt, unsafe, unknown type)."""


class NotAGPENCheckpoint(GPENError):
    """The file holds tensors, but not the ones a GPEN FullGenerator needs."""


class ConfigError(GPENError):
    """A GPENConfig (given or inferred from tensor shapes) that no GPEN network can have."""
