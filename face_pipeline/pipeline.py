"""The pipeline, assembled once: detect (batched) -> select -> track + smooth (frames) -> align -> restore -> paste.

``Pipeline`` is the one assembly the CLI, the ComfyUI nodes and the tests run: ``run`` does every stage, and the
stage methods (``find``, ``stabilise``, ``align``, ``restore``, ``paste``, and ``detect_and_align`` /
``restore_and_paste`` for callers that split the work, such as the CLI's video chunks and the step nodes) are the
same code. Each stage takes its own frozen options record (``options.py``); the application the pipeline runs in is
one ``host`` object (``protocols.Host``: memory, progress, Cancel, model and detector placement, notes), given once:
``host.LibraryHost`` for the CLI and the library, ComfyUI's in ``nodes/comfy_pipeline.py``.

An image batch ``[B, 3, H, W]`` is B independent photos of one size unless the caller says it is B frames of a video
in order (``VideoOptions.track``): then faces are tracked across the batch (never across a scene cut), a face
missed for a few frames is filled in from its neighbours, and landmarks are smoothed over time so crops do not
jitter. Independent photos never influence each other: a batch gives the pixels each photo gives alone. Images
without a face come back unchanged (resized to the output scale), with a log line.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .alignment import align_faces, crop_faces, face_affines, realign
from .detection import FaceDetector, detect_faces
from .errors import DetectorError, InvalidImageError, RestoreError
from .host import DEFAULT_HOST, LibraryHost
from .image import check_unit_range
from .options import AlignOptions, DetectOptions, PasteOptions, PipelineOptions, RestoreOptions, VideoOptions
from .paste import paste_within_memory
from .paste.scale import choose_scale
from .protocols import Host, RestorationModel
from .region import masks_for
from .restoration import ModelSet, model_size, output_sides, restore_faces, route
from .restoration.batching import auto_batch_size
from .restoration.restore import model_device_dtype
from .selection import FaceChoice, choose_faces, selection_notes
from .types import DetectedFace, FaceBatch, FaceSource, PasteResult, RestoredStep
from .video import fill_gaps, frame_thumbnails, scene_cuts, smooth_landmarks, track_faces
from .video.temporal import TemporalFilter, smooth_batch

logger = logging.getLogger(__name__)

__all__ = ["Pipeline", "PipelineOptions", "PipelineReport", "DetectOptions", "VideoOptions", "AlignOptions",
           "RestoreOptions", "PasteOptions", "Host", "LibraryHost", "run_pipeline", "find_choices", "find_faces",
           "given_choices", "selected_faces",
           "stabilise_faces", "stabilise_choices", "video_cuts", "check_images"]


@dataclass(frozen=True)
class PipelineReport:
    """What a run did: counts over the whole batch, wall time, and the time of each stage."""

    images: int
    faces_found: int  # detected, before selection
    faces_restored: int  # selected and restored
    seconds: float
    scale: int = 1  # the output scale used
    stage_seconds: dict = field(default_factory=dict, compare=False)  # "detect", "align", "restore", "paste"
    faces: FaceBatch | None = field(default=None, repr=False, compare=False)  # the restored batch, crops included
    # (None unless the run kept them: ``Pipeline.run(keep_faces=True)``)
    choices: list | None = field(default=None, repr=False, compare=False)  # per image, every face found: FaceChoice


def check_images(images: torch.Tensor) -> None:
    """``InvalidImageError`` unless ``images`` is a non-empty ``[B, 3, H, W]`` float32/64 tensor of RGB in 0..1."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        found = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvalidImageError(f"images must be a [B, 3, H, W] tensor (RGB 0..1; see image.to_rgb_float), got {found}")
    if images.dtype not in (torch.float32, torch.float64):
        hint = " (half precision is too coarse for alignment: use images.float())" if images.is_floating_point() else ""
        raise InvalidImageError(f"images must be float32 RGB in 0..1, got {images.dtype}{hint} (see "
                                f"image.to_rgb_float)")
    if images.shape[0] == 0 or images.shape[-1] == 0 or images.shape[-2] == 0:
        raise InvalidImageError(f"the image batch is empty: {list(images.shape)}")
    check_unit_range(images)


# ---------------------------------------------------------------------------------------------- stage functions
def find_choices(images: torch.Tensor, *, detector: FaceDetector, options: DetectOptions,
                 region: torch.Tensor | None = None,
                 check_interrupt: Callable[[], None] | None = None) -> list[list[FaceChoice]]:
    """Detection (the whole batch at once, at the angles ``options.rotations`` asks for) and selection: per image,
    every face found with what selection decided (``selection.choose_faces``: the selected ones first, in restore
    order). ``region``: optional ``[N, H, W]`` 0..1 mask (one per image or one for all, any size): only faces whose
    box it covers by at least ``options.region_overlap`` are selected."""
    check_images(images)
    masks = _region_masks(images, region)  # checked before the detector runs
    found = detect_faces(detector, images, rotations=options.rotations, score_threshold=options.score_threshold)
    if check_interrupt is not None:
        check_interrupt()
    return _choose(found, options, masks)


def _region_masks(images: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor | None:
    if region is None:
        return None
    return masks_for(region, batch=int(images.shape[0]), size=(int(images.shape[-2]), int(images.shape[-1])),
                     what="region mask")


def _choose(found: list[list[DetectedFace]], options: DetectOptions,
            masks: torch.Tensor | None) -> list[list[FaceChoice]]:
    return choose_faces(found, mode=options.select, indices=options.indices, sort_by=options.sort_by,
                        min_size=options.min_face_size, max_faces=options.max_faces,
                        region=None if masks is None else masks.cpu(), min_overlap=options.region_overlap)


def given_choices(images: torch.Tensor, faces_per_image: list[list[DetectedFace]], *, options: DetectOptions,
                  region: torch.Tensor | None = None) -> list[list[FaceChoice]]:
    """``find_choices`` for faces given instead of detected (``given_faces``; ``image_index`` relative to
    ``images``): the same selection (``options``: select, indices, sort order, min_face_size, max_faces, the region
    mask and its overlap) on them, no detector. The detector's options (score threshold, rotations) do not apply:
    the faces are taken as given."""
    check_images(images)
    if len(faces_per_image) != images.shape[0]:
        raise ValueError(f"given faces for {len(faces_per_image)} image(s), but the batch has {images.shape[0]}")
    for index, faces in enumerate(faces_per_image):
        if any(face.image_index != index for face in faces):
            raise ValueError(f"the faces given for image {index} must have image_index {index} (given_faces.faces_for "
                             f"places them)")
    return _choose(faces_per_image, options, _region_masks(images, region))


def selected_faces(choices: list[list[FaceChoice]]) -> list[list[DetectedFace]]:
    """The selected faces of ``find_choices``' result, per image in restore order."""
    return [[c.face for c in per_image if c.selected] for per_image in choices]


def find_faces(images: torch.Tensor, *, detector: FaceDetector, options: DetectOptions,
               region: torch.Tensor | None = None,
               check_interrupt: Callable[[], None] | None = None) -> tuple[list[list[DetectedFace]], int]:
    """``find_choices``, shortened: the selected faces per image and the number of faces detected before
    selection."""
    chosen = find_choices(images, detector=detector, options=options, region=region, check_interrupt=check_interrupt)
    return selected_faces(chosen), sum(len(per_image) for per_image in chosen)


def stabilise_faces(faces_per_image: list[list[DetectedFace]], *, options: VideoOptions,
                    cuts: tuple[int, ...] = ()) -> list[list[DetectedFace]]:
    """For a frame sequence (``options.track`` and more than one image): track faces by box overlap (tracks end at
    the scene ``cuts``, see ``video.scene_cuts``), fill gaps of up to ``options.fill_gaps`` frames, and smooth the
    landmarks over time (``options.smoothing``). Otherwise the faces are returned as they are."""
    if not options.track or len(faces_per_image) < 2:
        return faces_per_image
    tracked = track_faces(faces_per_image, cuts=cuts)
    tracked, filled = fill_gaps(tracked, max_gap=options.fill_gaps, cuts=cuts)
    if filled:
        logger.info("video: %d face(s) missed by the detector filled in from the frames around them", filled)
    if cuts:
        logger.info("video: %d scene cut(s) at frame %s: no face track continues across them", len(cuts),
                    ", ".join(map(str, cuts[:20])))
    return smooth_landmarks(tracked, strength=options.smoothing) if options.smoothing > 0 else tracked


def video_cuts(images: torch.Tensor, options: VideoOptions) -> tuple[int, ...]:
    """The scene cuts of ``images`` when they are video frames (``options.track``), else none."""
    if not options.track or images.shape[0] < 2:
        return ()
    return scene_cuts(frame_thumbnails(images))


def stabilise_choices(choices: list[list[FaceChoice]], *, options: VideoOptions,
                      cuts: tuple[int, ...] = ()) -> list[list[FaceChoice]]:
    """``stabilise_faces`` on the selected faces of ``choices`` (the others are neither tracked nor smoothed).
    Faces filled into a gap of their track come after the selected ones of their frame, selected, without index."""
    stable = stabilise_faces(selected_faces(choices), options=options, cuts=cuts)
    result = []
    for per_image, faces in zip(choices, stable):
        picked = [c for c in per_image if c.selected]
        others = [c for c in per_image if not c.selected]
        tracked = [dataclasses.replace(c, face=face) for c, face in zip(picked, faces)]
        filled = [FaceChoice(face=face, index=None, selected=True, reason="selected (filled in from the frames "
                                                                          "around it)") for face in faces[len(picked):]]
        result.append(tracked + filled + others)
    return result




# ------------------------------------------------------------------------------------------------- the assembly
_NO_MODEL = ("this pipeline has no restoration model (it was built with model=None, to detect only): build it with "
             "a model to align or restore faces")


class Pipeline:
    """The pipeline for one ``model``, ``detector`` and ``options`` (``PipelineOptions``: one record per stage), in
    ``host`` (``protocols.Host``: memory, progress, Cancel, model and detector placement, notes; default: a
    ``LibraryHost`` on PyTorch's memory figures, without progress or Cancel). ``model`` may be None for a pipeline
    that only detects, ``detector`` None for one that only restores and pastes.
    """

    def __init__(self, *, model: RestorationModel | ModelSet | None = None, detector: FaceDetector | None = None,
                 options: PipelineOptions = PipelineOptions(), host: Host = DEFAULT_HOST) -> None:
        if not isinstance(options, PipelineOptions):
            raise TypeError(f"options must be a PipelineOptions, got {type(options).__name__}")
        if not isinstance(host, Host):
            raise TypeError(f"host must be a face_pipeline.protocols.Host (memory, check_interrupt, progress, "
                            f"detecting, model_for, prepare_paste, notify), got {type(host).__name__}")
        # several models (``ModelSet``): each face restored by the one of its size (``restoration.routing``)
        self.model_set = model if isinstance(model, ModelSet) and len(model.models) > 1 else None
        if self.model_set is not None and options.restore.mode != "restore":
            raise ValueError(f"several models are for restore mode only (each face to the model of its size); mode "
                             f"{options.restore.mode!r} takes its one generator")
        model = model.largest if isinstance(model, ModelSet) else model
        self.model, self.detector, self.options, self.host = model, detector, options, host

    def _model(self) -> RestorationModel:
        """The model (of a set, the largest); ``RestoreError`` for a pipeline built without one."""
        if self.model is None:
            raise RestoreError(_NO_MODEL)
        return self.model

    def _model_for(self, faces: int, model: RestorationModel | None = None) -> RestorationModel:
        """``model`` (default: the model, of a set the largest), where the host wants it for ``faces`` faces;
        ``RestoreError`` for a pipeline without one."""
        placed = self.host.model_for(self.model if model is None else model, faces)
        if placed is None:
            raise RestoreError(_NO_MODEL)
        return placed

    def model_sizes(self, images: torch.Tensor, faces: list[DetectedFace]) -> tuple[int, ...]:
        """Per face of ``faces`` (of ``images``), the size of the model that restores it: routed by its size in the
        output (``restoration.routing``, with ``options.restore.model_routing`` and ``options.paste.scale``) with
        several models, else the model's."""
        routed = self._routes(images, faces)
        return routed[0] if routed is not None else tuple(model_size(self._model()) for _ in faces)

    def face_models(self, images: torch.Tensor, choices: list[list[FaceChoice]],
                    name: str | None = None) -> dict[DetectedFace, tuple[int, str]]:
        """Per selected face of ``choices`` (per image of ``images``, as ``find`` or ``stabilise`` give them), the
        size and name of the model that restores it (``face_report.FaceModels``): the set's names, or ``name``
        (default ``GPEN-<size>``) for one model."""
        faces = selected_faces(choices)
        flat = [face for per_image in faces for face in per_image]
        sizes = self.model_sizes(images, flat)
        if self.model_set is not None:
            return {face: (size, self.model_set.name_of(size)) for face, size in zip(flat, sizes)}
        return {face: (size, name or f"GPEN-{size}") for face, size in zip(flat, sizes)}

    def _routes(self, images: torch.Tensor, faces: list[DetectedFace],
                matrices: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[tuple[int, ...], int] | None:
        """With several models: per face its model's size, and the output scale routed for (``matrices``: the faces'
        ``face_affines`` at the largest model's size, when already made); else None. The output scale is fixed
        first, for the largest model (``auto``: as with that model alone)."""
        if self.model_set is None or not faces:
            return None
        size, align, paste = model_size(self._model()), self.options.align, self.options.paste
        affines, inverses = matrices if matrices is not None else face_affines(
            faces, size=size, template=align.template, precision=align.fit_precision)
        outline = FaceBatch.placeholder(images=images, faces=faces, affines=affines, inverse_affines=inverses,
                                        size=size, template=align.template)
        scale = choose_scale(outline, paste.scale, max_output_size=paste.max_output_size)
        return route(output_sides(affines, size=size, scale=scale), self.model_set.sizes,
                     self.options.restore.model_routing), scale

    # -------------------------------------------------------------------------------------------------- stages
    def find(self, images: torch.Tensor, *, region: torch.Tensor | None = None) -> list[list[FaceChoice]]:
        """Detection and selection (``find_choices`` with ``options.detect``)."""
        with self.host.detecting(self.detector):
            if self.detector is None:
                raise DetectorError("this pipeline has no face detector (it was built with detector=None, to restore "
                                    "and paste only): build it with a detector to find faces")
            chosen = find_choices(images, detector=self.detector, options=self.options.detect, region=region,
                                  check_interrupt=self.host.check_interrupt)
        for message in selection_notes(chosen, mode=self.options.detect.select, indices=self.options.detect.indices):
            self.host.notify(message)
        return chosen

    def given(self, images: torch.Tensor, faces_per_image: list[list[DetectedFace]], *,
              region: torch.Tensor | None = None) -> list[list[FaceChoice]]:
        """``find`` for faces given instead of detected: selection only (``given_choices`` with ``options.detect``);
        no detector is needed."""
        chosen = given_choices(images, faces_per_image, options=self.options.detect, region=region)
        for message in selection_notes(chosen, mode=self.options.detect.select, indices=self.options.detect.indices):
            self.host.notify(message)
        return chosen

    def stabilise(self, choices: list[list[FaceChoice]], *, cuts: tuple[int, ...] = ()) -> list[list[FaceChoice]]:
        """Tracking and smoothing of a frame sequence (``stabilise_choices`` with ``options.video``)."""
        return stabilise_choices(choices, options=self.options.video, cuts=cuts)

    def align(self, images: torch.Tensor, faces_per_image: list[list[DetectedFace]], *,
              size: int | None = None) -> FaceBatch:
        """The faces' crops at ``size`` (default: the model's) with ``options.align``."""
        faces = [face for per_image in faces_per_image for face in per_image]
        size = model_size(self._model()) if size is None else size
        align = self.options.align
        return align_faces(images, faces, size=size, template=align.template, interpolation=align.crop_interpolation,
                           rounded=align.round_crops, precision=align.fit_precision)

    def restore(self, batch: FaceBatch, *, inpaint_masks: torch.Tensor | None = None,
                on_progress: Callable[[int, int], None] | None = None, batch_size: int | None = None,
                size: int | None = None) -> FaceBatch:
        """``restore_faces`` with ``options.restore`` on the host's ``model_for(model, faces)``; with several models
        each face by the model of its size (``_restore_routed``). ``on_progress``: instead of the host's
        ``progress(faces)`` (a streamed restore counts over all its faces); ``batch_size``: instead of the options'
        (the stream's step); ``size``: every face by the model of this size (a stream's step, routed already)."""
        options = self.options.restore
        if batch_size is not None:
            options = dataclasses.replace(options, batch_size=batch_size)
        host = self.host
        on_progress = host.progress(batch.num_faces) if on_progress is None else on_progress
        model = None
        if size is not None:  # a step of faces routed to one model of the set
            model = self._model() if self.model_set is None else self.model_set.models[self.model_set.sizes.index(
                size)]
        else:
            routed = self._routes(batch.images, list(batch.faces))
            if routed is not None and set(routed[0]) != {model_size(self._model())}:
                return self._restore_routed(batch, routed[0], options=options, inpaint_masks=inpaint_masks,
                                            on_progress=on_progress)
        return restore_faces(self._model_for(batch.num_faces, model), batch, options=options,
                             inpaint_masks=inpaint_masks, on_progress=on_progress,
                             check_interrupt=host.check_interrupt, memory=host.memory)

    def _restore_routed(self, batch: FaceBatch, sizes: tuple[int, ...], *, options: RestoreOptions,
                        inpaint_masks: torch.Tensor | None, on_progress: Callable[[int, int], None] | None
                        ) -> FaceBatch:
        """``restore`` with several models: each face cut at its model's size (``sizes``) and restored by it, model
        after model (each loaded when its faces come); the faces kept at their sides in the top-left of ``[F, 3,
        S, S]`` crops (S the largest), with ``face_sizes``."""
        largest = max(sizes)
        base = realign(batch, size=largest) if batch.size != largest else batch
        crops = base.crops.new_zeros((batch.num_faces, 3, largest, largest))
        restored = crops.clone()
        affines, inverses = base.affines.clone(), base.inverse_affines.clone()
        done, total = 0, batch.num_faces
        by_size = {} if self.model_set is None else dict(zip(self.model_set.sizes, self.model_set.models))
        for size in sorted(set(sizes)):  # model after model, smallest first
            model = by_size[size]
            members = [i for i, s in enumerate(sizes) if s == size]
            take = torch.as_tensor(members, dtype=torch.long)
            part = realign(dataclasses.replace(base, faces=tuple(base.faces[i] for i in members),
                                               crops=base.crops[take.to(base.crops.device)],
                                               affines=base.affines[take], inverse_affines=base.inverse_affines[take],
                                               restored=None), size=size)
            first = done
            part = restore_faces(self._model_for(len(members), model), part, options=options,
                                 inpaint_masks=inpaint_masks, check_interrupt=self.host.check_interrupt,
                                 memory=self.host.memory,
                                 on_progress=None if on_progress is None else
                                 (lambda n, _t, first=first: on_progress(first + n, total)))
            rows = take.to(crops.device)
            crops[rows, :, :size, :size] = part.crops.to(crops.device)
            restored[rows, :, :size, :size] = part.restored_faces().to(crops.device)
            affines[take], inverses[take] = part.affines, part.inverse_affines
            done += len(members)
        return dataclasses.replace(base, crops=crops, restored=restored, affines=affines, inverse_affines=inverses,
                                   size=largest, restore_mode=options.mode, face_sizes=sizes)

    def paste(self, batch: FaceBatch, *, images: torch.Tensor | None = None, background: torch.Tensor | None = None,
              protect: torch.Tensor | None = None, source: FaceSource | None = None,
              face_masks: bool = True, scale: int | None = None) -> PasteResult:
        """``paste_within_memory`` with ``options.paste`` (images default ``batch.images``); ``source`` and
        ``face_masks``: a streamed paste (``paste_faces``); ``scale``: the output scale, instead of the options'
        (faces routed to several models: the scale they were routed for)."""
        images = batch.images if images is None else images
        options = self.options.paste if scale is None else dataclasses.replace(self.options.paste, scale=scale)
        images, background, protect, parsing_net = self.host.prepare_paste(batch, images, background, protect,
                                                                           options=options)
        return paste_within_memory(batch, options=options, images=images, memory=self.host.memory,
                                   background=background, protect=protect, parsing_net=parsing_net, source=source,
                                   face_masks=face_masks)

    # ------------------------------------------------------------------------------------------ stages chained
    def detect_and_align(self, images: torch.Tensor, *, size: int | None = None, region: torch.Tensor | None = None,
                         timings: dict | None = None) -> tuple[FaceBatch, list[list[FaceChoice]]]:
        """``find``, ``stabilise`` (cuts from ``images``) and ``align`` at ``size``. Returns the aligned batch and
        every face found per image (``FaceChoice``, tracked). ``timings``, when given, receives the seconds of
        "detect" and "align"."""
        start = time.perf_counter()
        chosen = self.stabilise(self.find(images, region=region), cuts=video_cuts(images, self.options.video))
        detected = time.perf_counter()
        batch = self.align(images, selected_faces(chosen), size=size)
        if timings is not None:
            timings["detect"] = detected - start
            timings["align"] = time.perf_counter() - detected
        return batch, chosen

    def temporal_filter(self) -> TemporalFilter | None:
        """A new temporal smoothing state for one frame sequence (``video/temporal.py``), for ``restore_and_paste``'s
        ``temporal``: when ``options.video`` tracks with ``temporal_smoothing`` above 0; else None."""
        video = self.options.video
        if not video.track or video.temporal_smoothing == 0:
            return None
        return TemporalFilter(strength=video.temporal_smoothing)

    def smooth_over_time(self, batch: FaceBatch) -> FaceBatch:
        """Video frames restored all at once (the Restore Faces node): ``batch``'s restored faces (``image_index``:
        the frame number) smoothed along their tracks with ``options.video.temporal_smoothing``
        (``video/temporal.py``), with their colour references for the paste; ``batch`` as it is when the strength is
        0 or no face carries a track id (independent images)."""
        strength = self.options.video.temporal_smoothing
        if strength == 0 or all(face.track_id is None for face in batch.faces):
            return batch
        return smooth_batch(batch, TemporalFilter(strength=strength))

    def restore_and_paste(self, images: torch.Tensor, faces_per_image: list[list[DetectedFace]], *,
                          background: torch.Tensor | None = None, inpaint_masks: torch.Tensor | None = None,
                          protect: torch.Tensor | None = None, timings: dict | None = None, keep_faces: bool = True,
                          on_restored: Callable[[FaceBatch], None] | None = None,
                          temporal: TemporalFilter | None = None, frames: Sequence[int] | None = None
                          ) -> tuple[PasteResult, FaceBatch | None]:
        """Align, restore and paste faces found earlier (``image_index`` relative to ``images``). This lets a caller
        detect and track over a long frame sequence first, then restore it in chunks that fit in memory.

        The faces stream through in steps (``faces_per_step``, or ``options.restore.batch_size`` when set): each
        step is aligned, restored and pasted, then let go, so memory does not grow with the number of faces.
        ``keep_faces``: also return every restored face (the ``FaceBatch``, crops included) and the per-face masks
        (``PasteResult.face_masks``), which do grow with the faces; without it the batch returned is None and
        ``face_masks`` is ``[0, H*s, W*s]``. ``on_restored(step)``: called with each step's ``FaceBatch`` (its
        faces, crops and restored crops) as it comes, e.g. to write the crops to files, each face once.

        Video: ``temporal`` (``temporal_filter()``, one per frame sequence, handed every chunk of it in order)
        smooths the tracked faces over time (``video/temporal.py``); ``frames``: each image's frame number in the
        sequence (default: its index in ``images``). The restored faces handed on and kept are the smoothed ones.
        A call that fails leaves ``temporal`` as it found it."""
        check_images(images)
        return self._restore_and_paste(images, faces_per_image, background=background, inpaint_masks=inpaint_masks,
                                       protect=protect, timings=timings, keep_faces=keep_faces,
                                       on_restored=on_restored, temporal=temporal, frames=frames)

    def _restore_and_paste(self, images, faces_per_image, *, background, inpaint_masks, protect, timings,
                           keep_faces: bool = True, on_restored=None, temporal: TemporalFilter | None = None,
                           frames: Sequence[int] | None = None) -> tuple[PasteResult, FaceBatch | None]:
        """``restore_and_paste`` for images already checked (``run``: ``find`` checked them)."""
        timings = {} if timings is None else timings
        start = time.perf_counter()
        stream = _FaceStream(self, images, [face for per_image in faces_per_image for face in per_image],
                             inpaint_masks=inpaint_masks, keep_faces=keep_faces, on_restored=on_restored,
                             temporal=temporal, frames=frames)
        try:
            stream.first_step()
            result = self.paste(stream.outline, images=images, background=background, protect=protect,
                                source=stream if stream.outline.num_faces else None, face_masks=keep_faces,
                                scale=stream.scale)
        except BaseException:
            stream.rewind()
            raise
        # the steps' align and restore, and the rest (the model fetched, the paste) as "paste"
        spent = stream.seconds["align"] + stream.seconds["restore"]
        timings["align"] = timings.get("align", 0.0) + stream.seconds["align"]
        timings["restore"] = stream.seconds["restore"]
        timings["paste"] = time.perf_counter() - start - spent
        return result, stream.restored()

    def run(self, images: torch.Tensor, *, background: torch.Tensor | None = None,
            inpaint_masks: torch.Tensor | None = None, region: torch.Tensor | None = None,
            protect: torch.Tensor | None = None, keep_faces: bool = True) -> tuple[PasteResult, PipelineReport]:
        """Restore every selected face of ``images`` ``[B, 3, H, W]`` (float32 RGB 0..1, any device).

        Returns the ``PasteResult`` (images ``[B, 3, H*s, W*s]`` at the output scale s, masks) and a
        ``PipelineReport``. ``background``: optional ``[B, 3, h, w]`` image for the output (e.g. from an upscaler;
        resized if needed). ``inpaint_masks``: for mode inpaint, image-space ``[B, H, W]`` (1 = damaged).
        ``region``: only faces this ``[N, H, W]`` 0..1 mask covers (``find_choices``); ``protect``: pixels the paste
        never changes (``paste_faces``). ``keep_faces``: keep every restored crop (``PipelineReport.faces``) and
        per-face mask (``PasteResult.face_masks``); off, memory stays that of a few faces however many there are
        (``restore_and_paste``), and ``report.faces`` is None.
        """
        start = time.perf_counter()
        timings: dict[str, float] = {}
        chosen = self.find(images, region=region)
        found = sum(len(per_image) for per_image in chosen)  # detected (filled-in video faces come next)
        chosen = self.stabilise(chosen, cuts=video_cuts(images, self.options.video))
        timings["detect"] = time.perf_counter() - start
        faces = selected_faces(chosen)
        result, restored = self._restore_and_paste(images, faces, background=background,
                                                   inpaint_masks=inpaint_masks, protect=protect, timings=timings,
                                                   keep_faces=keep_faces, temporal=self.temporal_filter())
        report = PipelineReport(images=int(images.shape[0]), faces_found=found,
                                faces_restored=sum(len(per_image) for per_image in faces),
                                seconds=time.perf_counter() - start, scale=result.scale, stage_seconds=timings,
                                faces=restored, choices=chosen)
        logger.debug("%d image(s), %d face(s) found, %d restored in %.2f s (%s)", report.images, found,
                     report.faces_restored, report.seconds, ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
        return result, report


class _FaceStream:
    """The faces of one ``restore_and_paste`` as a ``FaceSource``: ``outline`` is their placeholder batch (matrices,
    no crops) for the paste to plan with; called with face positions, it aligns and restores them a step at a time
    and yields each step (``RestoredStep``) for the paste, so only a step's crops are alive at once. Each step runs
    ``Pipeline.restore``'s model (the host's ``model_for`` per step), its progress counted over all the faces.

    With several models (``Pipeline.model_set``) each face is routed to the model of its size (``_routes``): the
    outline then holds each face's matrices at its model's side (``FaceBatch.face_sizes``), and a step is a run of
    consecutive faces of one model (at most that model's step size), so each model restores its faces in batches
    and is loaded by the host when its faces come."""

    def __init__(self, pipeline: Pipeline, images: torch.Tensor, faces: list[DetectedFace], *,
                 inpaint_masks: torch.Tensor | None, keep_faces: bool,
                 on_restored: Callable[[FaceBatch], None] | None, temporal: TemporalFilter | None = None,
                 frames: Sequence[int] | None = None) -> None:
        self.pipeline, self.images, self.faces = pipeline, images, faces
        self.inpaint_masks, self.keep_faces, self.on_restored = inpaint_masks, keep_faces, on_restored
        options = pipeline.options
        if options.restore.mode == "inpaint" and inpaint_masks is None:
            raise ValueError("inpaint mode needs inpaint_masks marking the damaged region (1 = damaged); for an image "
                             "whose damage is already painted white, pass an all-zero mask")
        for face in faces:
            if not 0 <= face.image_index < images.shape[0]:
                raise ValueError(f"a face refers to image {face.image_index}, but the batch has {images.shape[0]} "
                                 f"images")
        self.size = model_size(pipeline._model())
        align = options.align
        affines, inverses = face_affines(faces, size=self.size, template=align.template,
                                         precision=align.fit_precision)
        routed = pipeline._routes(images, faces, (affines, inverses))
        self.scale: int | None = None  # the output scale the faces were routed for (several models)
        self.sizes = tuple(self.size for _ in faces)  # per face, its model's side
        if routed is not None and set(routed[0]) != {self.size}:
            self.sizes, self.scale = routed
            for size in set(self.sizes) - {self.size}:  # each face's matrices at its own model's side
                members = [i for i, s in enumerate(self.sizes) if s == size]
                own = face_affines([faces[i] for i in members], size=size, template=align.template,
                                   precision=align.fit_precision)
                take = torch.as_tensor(members, dtype=torch.long)
                affines[take], inverses[take] = own
        routed_sizes = self.sizes if self.scale is not None else None
        self.outline = FaceBatch.placeholder(images=images, faces=faces, affines=affines, inverse_affines=inverses,
                                             size=self.size, template=align.template,
                                             restore_mode=options.restore.mode, face_sizes=routed_sizes)
        models = pipeline.model_set
        self.models = ({self.size: pipeline._model()} if models is None
                       else dict(zip(models.sizes, models.models)))  # by side, as built (the host places them)
        self.counts = {size: self.sizes.count(size) for size in set(self.sizes)}
        self.placed: dict[int, RestorationModel] = {}  # by side: placed for all its faces, to size the steps
        if routed_sizes is None and faces:  # one model: placed now for every face
            self.placed[self.size] = pipeline._model_for(len(faces))
        progress = pipeline.host.progress(len(faces))
        self.progress = (lambda done, total: None) if progress is None else progress
        self.seconds = {"align": 0.0, "restore": 0.0}
        self.delivered: set[int] = set()  # faces restored and handed on (a paste fallback asks for some again)
        self.kept: tuple[torch.Tensor, torch.Tensor] | None = None  # keep_faces: every crop and restored crop
        self.steps: dict[int, int] = {}  # faces per step, per model side, once known
        self.ahead: tuple[list[int], RestoredStep] | None = None  # the first step, restored before the paste
        self.temporal, self.frames = temporal, list(range(images.shape[0])) if frames is None else list(frames)
        if len(self.frames) != images.shape[0]:
            raise ValueError(f"frames gives {len(self.frames)} frame numbers for {images.shape[0]} images")
        self.temporal_start = None if temporal is None else temporal.snapshot()
        self.temporal_next = 0  # the face after the last one handed to the temporal filter

    def model(self, size: int) -> RestorationModel:
        """The model of side ``size`` placed by the host for all its faces (once; each step asks the host again,
        ``Pipeline.restore``: it may have moved the model, or offloaded it for another model of the set)."""
        if size not in self.placed:
            self.placed[size] = self.pipeline._model_for(self.counts[size], self.models[size])
        return self.placed[size]

    def step_size(self, size: int) -> int:
        """Faces per step for the model of ``size``: ``options.restore.batch_size``, else what the memory estimate
        allows, at most ``faces_per_step`` (one on the CPU, a few on a GPU)."""
        requested = self.pipeline.options.restore.batch_size
        if requested:
            return requested
        if size not in self.steps:
            model = self.model(size)
            device, dtype = model_device_dtype(model)
            self.steps[size] = auto_batch_size(model, size=size, dtype=dtype, device=device, faces=self.counts[size],
                                               memory=self.pipeline.host.memory)
        return self.steps[size]

    def runs(self, positions: list[int]) -> Iterator[list[int]]:
        """``positions`` in order, cut into steps: consecutive faces of one model, at most its step size."""
        start = 0
        while start < len(positions):
            size = self.sizes[positions[start]]
            limit = self.step_size(size)
            end = start + 1
            while end < len(positions) and end - start < limit and self.sizes[positions[end]] == size:
                end += 1
            yield positions[start:end]
            start = end

    def first_step(self) -> None:
        """Restores the first step now, before the paste is prepared (so a host loads the model and restores before
        it makes room for the paste); the next call for every face starts from it."""
        if self.faces and self.ahead is None:
            chunk = next(iter(self.runs(list(range(len(self.faces))))))
            self.ahead = (chunk, self._restored_step(chunk, 0))

    def __call__(self, positions) -> Iterator[RestoredStep]:
        positions = list(positions)
        start = 0
        for chunk in self.runs(positions):
            if self.ahead is not None and self.ahead[0] == chunk and start == 0:
                restored, self.ahead = self.ahead[1], None
            else:
                restored = self._restored_step(chunk, start)
            yield restored
            start += len(chunk)
            del restored

    def _restored_step(self, chunk: list[int], start: int) -> RestoredStep:
        """The faces at ``chunk`` (of one model), aligned and restored, as the step starting at ``start``."""
        pipeline, total = self.pipeline, len(self.faces)
        pipeline.host.check_interrupt()
        mark = time.perf_counter()
        size = self.sizes[chunk[0]]
        take = torch.as_tensor(chunk, dtype=torch.long)
        part = [self.faces[i] for i in chunk]
        affines = self.outline.affines[take]
        batch = FaceBatch(images=self.images, faces=tuple(part),
                          crops=crop_faces(self.images, part, affines, size,
                                           interpolation=pipeline.options.align.crop_interpolation,
                                           rounded=pipeline.options.align.round_crops),
                          affines=affines, inverse_affines=self.outline.inverse_affines[take], size=size,
                          template=self.outline.template)
        restoring = time.perf_counter()
        self.seconds["align"] += restoring - mark
        base = len(self.delivered)  # faces done before this step (a paste fallback asks for some again)
        batch = pipeline.restore(batch, inpaint_masks=self.inpaint_masks, batch_size=len(chunk), size=size,
                                 on_progress=lambda done, _n: self.progress(min(base + done, total), total))
        self.seconds["restore"] += time.perf_counter() - restoring
        batch, reference = self._over_time(chunk, batch)
        self._hand_on(chunk, batch)
        return RestoredStep(first=start, crops=batch.crops, restored=batch.restored_faces(),
                            color_reference=reference)

    def _over_time(self, chunk: list[int], batch: FaceBatch) -> tuple[FaceBatch, torch.Tensor | None]:
        """Video: the step's restored faces smoothed along their tracks, and their colour references
        (``video/temporal.py``); without a temporal filter, the step as it is and None. Faces asked for again (a
        paste that falls back asks again from the first face) rewind the filter to where this stream began, so
        they come out the same."""
        if self.temporal is None:
            return batch, None
        if chunk[0] < self.temporal_next:
            self.rewind()
        self.temporal_next = chunk[-1] + 1
        restored, reference = self.temporal.smooth(batch.crops, batch.restored_faces(),
                                                   tracks=[face.track_id for face in batch.faces],
                                                   frames=[self.frames[face.image_index] for face in batch.faces])
        return dataclasses.replace(batch, restored=restored), reference

    def rewind(self) -> None:
        """The temporal filter back to where this stream began (none: nothing to do)."""
        if self.temporal is not None and self.temporal_start is not None:
            self.temporal.rewind(self.temporal_start)
            self.temporal_next = 0

    def _hand_on(self, chunk: list[int], batch: FaceBatch) -> None:
        """Keeps the step's faces when asked and gives the new ones to ``on_restored``."""
        restored = batch.restored_faces()
        if self.keep_faces:
            if self.kept is None:
                shape = (len(self.faces), 3, self.size, self.size)
                make = batch.crops.new_empty if self.scale is None else batch.crops.new_zeros  # routed: padded
                self.kept = (make(shape), make(shape, dtype=restored.dtype, device=restored.device))
            take = torch.as_tensor(chunk, dtype=torch.long, device=batch.crops.device)
            side = batch.size
            self.kept[0][take, :, :side, :side] = batch.crops
            self.kept[1][take, :, :side, :side] = restored
        new = [k for k, i in enumerate(chunk) if i not in self.delivered]
        self.delivered.update(chunk)
        if self.on_restored is not None and new:
            if len(new) < len(chunk):
                rows = torch.as_tensor(new, dtype=torch.long)
                batch = dataclasses.replace(batch, faces=tuple(batch.faces[k] for k in new),
                                            crops=batch.crops[rows.to(batch.crops.device)],
                                            affines=batch.affines[rows], inverse_affines=batch.inverse_affines[rows],
                                            restored=restored[rows.to(restored.device)])
            self.on_restored(batch)

    def restored(self) -> FaceBatch | None:
        """Every face restored (``keep_faces``), else None."""
        if not self.keep_faces:
            return None
        if self.kept is None:  # no face
            empty = self.images.new_zeros((0, 3, self.size, self.size), dtype=torch.float32)
            self.kept = (empty, empty.clone())
        return dataclasses.replace(self.outline, crops=self.kept[0], restored=self.kept[1], streamed=False)


def run_pipeline(images: torch.Tensor, *, model: RestorationModel, detector: FaceDetector,
                 options: PipelineOptions = PipelineOptions(), host: Host = DEFAULT_HOST,
                 **inputs) -> tuple[PasteResult, PipelineReport]:
    """``Pipeline(model=..., detector=..., options=..., host=...).run(images, **inputs)`` (``inputs``: background,
    inpaint_masks, region, protect)."""
    return Pipeline(model=model, detector=detector, options=options, host=host).run(images, **inputs)
