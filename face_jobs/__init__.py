"""File jobs: which images are read, where each result goes (clashes refused up front), writing that never leaves a
partial file or replaces one unasked, one run per output folder, and the per-input loop with its summary.

Inputs may be objects in an object store (``s3://...``; ``stores``). Shared by the command line (``cli.py``) and any other engine that restores image files.
"""

from .inputs import InputFile, JobInputs, collect_inputs
from .job import JobSummary, Outcome, describe_failure, is_out_of_memory, run_each
from .lock import LOCK_NAME, OutputLock
from .plan import OutputPlan, PlannedOutput, names_a_file, plan_outputs
from .stores import StoreObject, is_uri, source_size, staged
from .writer import PendingWrite, describe_os_error, write_atomically

__all__ = [
    "LOCK_NAME",
    "InputFile",
    "JobInputs",
    "JobSummary",
    "Outcome",
    "OutputLock",
    "OutputPlan",
    "PendingWrite",
    "PlannedOutput",
    "StoreObject",
    "collect_inputs",
    "describe_failure",
    "describe_os_error",
    "is_out_of_memory",
    "is_uri",
    "names_a_file",
    "plan_outputs",
    "run_each",
    "source_size",
    "staged",
    "write_atomically",
]
