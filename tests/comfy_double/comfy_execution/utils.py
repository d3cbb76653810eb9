"""Test double of ``comfy_execution.utils``: the node that is running (``executing``; None outside a node)."""

from typing import NamedTuple


class ExecutionContext(NamedTuple):
    prompt_id: str
    node_id: str
    list_index: int | None


executing = None  # an ExecutionContext while a test pretends a node runs


def get_executing_context():
    return executing
