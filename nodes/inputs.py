"""Node inputs from the stages' option records, and the records back from a node's inputs.

The records (``face_pipeline/options.py``, ``restoration/options.py``, ``paste/options.py``) say once, per field,
its default, its choices or range and its help (``fields.option``). ``option_input`` turns a field into the
ComfyUI input tuple, and ``pipeline_options`` builds the records from the values ComfyUI passes to a node, so a node
writes an option's name and what it shows differently, nothing else. A node may narrow a bound (never widen it),
show the choices as text (``output_scale``: "1", "2", "4", "auto" over the int field ``scale``), set the step, or
give a longer tooltip than the field's help; ``default`` is overridden only where the widget means something else
than the field (Detect Faces' ``video_smoothing``: 0 = not a video). A later move to ComfyUI's V3 schema
(``io.Schema``) changes this module, not the nodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..face_pipeline.fields import OptionSpec, is_number, spec
from ..face_pipeline.options import STAGES, PipelineOptions

_UNSET = object()


def _as_sentence(text: str) -> str:
    """A field's help as a tooltip: capitalised, ending with a full stop."""
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _default(record: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(record) if f.name == name)


def _shown(value: Any, choices: tuple) -> Any:
    """``value`` as one of the displayed ``choices`` (the text of a number: 1 -> "1")."""
    return value if value in choices else next((c for c in choices if c == str(value)), value)


def option_input(record: type, name: str, *, choices: tuple | list | None = None, kind: str | None = None,
                 default: Any = _UNSET, tooltip: str | None = None, **extra) -> tuple[Any, dict]:
    """The ComfyUI input ``(type, options)`` of field ``name`` of ``record`` (a stage record class).

    type: a combo list of the field's ``choices`` (or of ``choices``: a subset of them, or their text), "BOOLEAN"
    for a ``boolean`` field, "INT" for a ``whole`` one, else "FLOAT" (``kind`` overrides: an "INT" widget over a
    float field). options: ``default`` (the field's, as shown: text for text choices, int for an INT widget), then
    ``min`` / ``max`` from the field's range, which ``extra`` may narrow but not widen, any other ``extra`` (step),
    and ``tooltip`` (the field's help as a sentence unless given). ``ValueError`` names a wrong override.
    """
    field_spec: OptionSpec = spec(record, name)
    where = f"{record.__name__}.{name}"
    value = _default(record, name) if default is _UNSET else default
    if field_spec.choices:
        shown = tuple(field_spec.choices if choices is None else choices)
        allowed = [*field_spec.choices, *map(str, field_spec.choices)]
        unknown = [c for c in shown if c not in allowed]
        if unknown:
            raise ValueError(f"{where}: the choices {unknown} are not among the field's {list(field_spec.choices)}")
        kind_shown: Any = list(shown)
        options: dict[str, Any] = {"default": _shown(value, shown)}
    elif field_spec.boolean:
        kind_shown, options = "BOOLEAN", {"default": value}
    elif field_spec.low is not None:
        kind_shown = kind or ("INT" if field_spec.whole else "FLOAT")
        low, high = extra.pop("min", field_spec.low), extra.pop("max", field_spec.high)
        if low < field_spec.low or (field_spec.high is not None and (high is None or high > field_spec.high)):
            raise ValueError(f"{where}: a node may narrow the field's range {field_spec.low:g}..{field_spec.high} "
                             f"but not widen it; got {low:g}..{high}")
        whole = kind_shown == "INT"
        options = {"default": int(value) if whole else float(value), "min": int(low) if whole else low}
        if high is not None:
            options["max"] = high
    else:
        raise ValueError(f"{where} has neither choices, a range nor a boolean: write its input by hand")
    options.update(extra)
    options["tooltip"] = tooltip or _as_sentence(field_spec.help)
    return kind_shown, options


def _field_value(record: type, name: str, value: Any) -> Any:
    """A node's value as the field takes it: text choices back to theirs ("2" -> 2), INT/FLOAT widgets to the
    field's number type, booleans as bools. Anything else is left for the record to refuse."""
    field_spec = spec(record, name)
    if field_spec.choices:
        return next((c for c in field_spec.choices if c == value or (isinstance(value, str) and str(c) == value)),
                    value)
    if field_spec.boolean:
        return bool(value)
    if field_spec.low is not None and is_number(value):
        if not field_spec.whole:
            return float(value)
        return int(value) if value == int(value) else value  # 1.5: refused by the record, not rounded here
    return value


def pipeline_options(values: Mapping[str, Any], *, names: Mapping[str, str] | None = None,
                     **fixed: Any) -> PipelineOptions:
    """The stages' records from a node's option inputs ``values`` (input name -> value, as ComfyUI passes them): each
    input goes to the record with a field of its name (``names`` renames an input to its field: ``output_scale``
    -> ``scale``), converted to the field's type (``_field_value``); an input that is None or missing (an optional
    input not in an older prompt) leaves the field's default. ``fixed``: fields the node sets itself (already the
    field's value, e.g. ``parsing_dir``). Every record is validated when built (``ValueError``); an input that is
    no stage option is a ``TypeError``."""
    names = names or {}
    by_field = {f.name: record for record in STAGES.values() for f in dataclasses.fields(record)}
    routed: dict[str, Any] = {}
    for key, value in values.items():
        field = names.get(key, key)
        if field not in by_field:
            raise TypeError(f"{key!r} is not an option of any stage ({', '.join(STAGES)})")
        if value is not None:
            routed[field] = _field_value(by_field[field], field, value)
    return PipelineOptions.of(**routed, **fixed)
