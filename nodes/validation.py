"""The nodes' ``VALIDATE_INPUTS``, built from their ``INPUT_TYPES``: every widget value is checked before anything in
the prompt runs, NaN and infinity included.

How ComfyUI validates (execution.py, ``validate_inputs``, 0.3.x): it converts each widget value with ``int()`` /
``float()`` (so ``"nan"`` or a JSON ``NaN`` becomes a float NaN) and then checks ``min`` / ``max`` and combo lists
itself, but only for inputs that ``VALIDATE_INPUTS`` does not take; ``val < min`` is False for NaN, so NaN passed.
Our ``VALIDATE_INPUTS`` takes ``**values`` (every input the prompt gives), so ComfyUI leaves all of those checks to
it: ``check_widgets`` does them from ``INPUT_TYPES`` (numbers finite, whole for INT, within min..max; combo values
in their list). Linked inputs reach it as None (their values are not known before the graph runs) and are skipped:
the option records refuse NaN when the node runs. ComfyUI's type check of links stays in place because
``VALIDATE_INPUTS`` does not take ``input_types``. ComfyUI repeats a refusal under every input it passed, so each
message names the input at fault.
"""

from __future__ import annotations

import math

from ..face_pipeline.fields import check_range


def check_widgets(input_types: dict, values: dict) -> bool | str:
    """True, or what is wrong with the first bad widget value of ``values`` (input name -> value, as ComfyUI passes
    them to ``VALIDATE_INPUTS``) against ``input_types`` (the node's ``INPUT_TYPES()``)."""
    declared = {**input_types.get("required", {}), **input_types.get("optional", {})}
    for name, value in values.items():
        if name not in declared or value is None:  # hidden inputs; links (not known yet)
            continue
        kind, *rest = declared[name]
        extra = rest[0] if rest else {}
        if kind in ("INT", "FLOAT"):
            try:
                check_range(name, value, extra.get("min", -math.inf), extra.get("max"), whole=kind == "INT")
            except ValueError as exc:
                return str(exc)
        elif isinstance(kind, (list, tuple)) and value not in kind:
            shown = ", ".join(map(str, kind[:20])) + (f", ... ({len(kind)} in all)" if len(kind) > 20 else "")
            return f"{name} must be one of {shown}; got {value!r}"
    return True


class CheckedWidgets:
    """A node whose ``VALIDATE_INPUTS`` checks every widget value against its ``INPUT_TYPES`` (``check_widgets``)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        raise NotImplementedError(f"{cls.__name__} declares no INPUT_TYPES")

    @classmethod
    def VALIDATE_INPUTS(cls, **values):
        return check_widgets(cls.INPUT_TYPES(), values)
