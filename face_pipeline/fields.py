"""Option fields of the stages' frozen records: each field carries its default, its allowed values or range and its
help text (dataclass field metadata), and ``check_fields`` validates a record from that metadata, once, in its
``__post_init__``.

The records themselves live with their stages: ``options.DetectOptions`` / ``VideoOptions`` / ``AlignOptions``,
``restoration.options.RestoreOptions``, ``paste.options.PasteOptions``. Hosts (the CLI's flags, the nodes' inputs)
read the same metadata (``spec``) for bounds and choices instead of writing them out again.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True)
class OptionSpec:
    """What a record field accepts: ``choices``, or a number in ``low..high`` (``whole``: an integer), or a bool
    (``boolean``), or a folder path (``path``); ``optional``: None is allowed too."""

    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    whole: bool = False
    boolean: bool = False
    path: bool = False
    optional: bool = False


def option(default: Any, help: str, **spec) -> Any:
    """A record field with ``default`` and its ``OptionSpec`` (see there for ``spec``)."""
    return dataclasses.field(default=default, metadata={"option": OptionSpec(help=help, **spec)})


def spec(record: DataclassInstance | type[DataclassInstance], name: str) -> OptionSpec:
    """The ``OptionSpec`` of field ``name`` of a record (class or instance)."""
    for f in dataclasses.fields(record):
        if f.name == name:
            return f.metadata["option"]
    raise KeyError(f"{name!r} is not a field of {getattr(record, '__name__', type(record).__name__)}")


def is_number(value) -> bool:
    """A finite real number (numpy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_range(name: str, value, low: float, high: float | None = None, *, whole: bool = False) -> None:
    """``ValueError`` unless ``value`` is a finite number (a whole one if ``whole``) in ``low..high``."""
    kind = "a whole number" if whole else "a number"
    bounds = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"
    if not is_number(value) or (whole and value != int(value)) or value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {kind} {bounds}, got {value!r}")


def check_value(name: str, value, option_spec: OptionSpec) -> None:
    """``ValueError`` (saying what is allowed) unless ``value`` fits ``option_spec``."""
    if value is None and option_spec.optional:
        return
    if option_spec.choices:
        if value not in option_spec.choices or isinstance(value, bool):
            raise ValueError(f"{name} must be one of {', '.join(map(str, option_spec.choices))}; got {value!r}")
    elif option_spec.boolean:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    elif option_spec.path:
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"{name} must be a folder path or None, got {type(value).__name__}")
    elif option_spec.low is not None:
        check_range(name, value, option_spec.low, option_spec.high, whole=option_spec.whole)


def check_fields(record: DataclassInstance) -> None:
    """Validate every option field of ``record`` from its metadata (fields without it are left to the record)."""
    for f in dataclasses.fields(record):
        if "option" in f.metadata:
            check_value(f.name, getattr(record, f.name), f.metadata["option"])
