"""The batch application: restoring the faces of image files, folders and object-store inputs, as the command line
(``cli.py``) runs it. It sits between the hosts and the face pipeline (hosts -> ``face_jobs`` -> ``face_pipeline`` ->
``gpen_arch``) and imports neither ``cli.py`` nor ``nodes``.

- ``config``: the frozen ``JobConfig`` (stage records + the job's own settings) and ``RayOptions``;
- ``job``: the ``Worker`` (model, detector, pipeline loaded once) whose per-input work returns ``ItemResult`` values;
- ``summary``: ``ItemResult``, ``attempt`` (per-input failures told from fatal errors, once), ``JobSummary``;
- ``protocols``: ``BatchJob``, what the engines need from a job; ``engines/``: local, Ray images, Ray sequence;
- ``run``: one job from configuration to summary;
- files: ``inputs`` (which images), ``stores`` (object stores), ``plan`` (where each result goes, clashes refused
  up front), ``writer`` (temporary file + rename, never replacing unasked), ``lock`` (one run per output folder),
  ``sides`` (faces.json and crops an earlier run left out), ``threads`` (one CPU thread count for both engines),
  ``masks`` (inpainting masks from a folder).
"""

from .inputs import InputFile, JobInputs, collect_inputs
from .lock import LOCK_NAME, OutputLock
from .plan import OutputPlan, PlannedOutput, SideOutputs, names_a_file, plan_outputs
from .stores import StoreObject, is_uri, source_size, staged
from .summary import ItemResult, JobSummary, Outcome, attempt, describe_failure
from .writer import PendingWrite, describe_os_error, save_image, write_atomically

__all__ = [
    "LOCK_NAME",
    "InputFile",
    "ItemResult",
    "JobInputs",
    "JobSummary",
    "Outcome",
    "OutputLock",
    "OutputPlan",
    "PendingWrite",
    "PlannedOutput",
    "SideOutputs",
    "StoreObject",
    "attempt",
    "collect_inputs",
    "describe_failure",
    "describe_os_error",
    "is_uri",
    "names_a_file",
    "plan_outputs",
    "save_image",
    "source_size",
    "staged",
    "write_atomically",
]
