"""The per-input work of a file job: a ``Worker`` loads the model, the detector and the pipeline once from a
``JobConfig``, then restores an input (``photo``), a video's frames (``video``) or the side outputs an earlier run
left out (``complete_sides``), each returning ``ItemResult`` values (``summary``) instead of counting in a shared
summary. Every file goes to the worker's ``sink`` as a ``PendingWrite``: written at once (the local engine), or
handed back to a driver that writes it (the Ray engines). Per-input failures are told from fatal errors in one place,
``summary.attempt``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from face_pipeline.annotate import annotate_faces
from face_pipeline.detection import load_detector
from face_pipeline.errors import InvalidImageError
from face_pipeline.face_report import faces_json, faces_report
from face_pipeline.image import ImageFile, apply_budget_to_pillow, encode_image, load_image, read_image, same_format
from face_pipeline.paste.parsing import load_parsing_net
from face_pipeline.pipeline import Pipeline, selected_faces
from face_pipeline.region import masks_for
from face_pipeline.restoration import ModelSet
from face_pipeline.selection import FaceChoice
from face_pipeline.video import frame_thumbnails, scene_cuts
from face_pipeline.video.temporal import TemporalFilter
from gpen_arch import load_gpen_file

from .config import JobConfig, UsageError, pick_device, pick_dtype
from .frames import SeenFrame, renumber_tracks, segments, track_start
from .given import JobFaces
from .plan import OutputPlan, PlannedOutput
from .sides import merge_records
from .stores import source_size, staged
from .summary import ItemResult, Outcome, attempt, failure
from .writer import PendingWrite, describe_os_error, write_atomically

logger = logging.getLogger(__name__)
FRAMES_PER_CHUNK = 8  # --video-frames: frames restored and pasted together (memory: 8 full frames + their faces)
# temporal smoothing reaches temporal.WINDOW - 1 frames back, no further than the chunk before (tests/test_cli_video.py)


def local_file(item: PlannedOutput) -> Path:
    """The local file ``item`` is read from: an object-store input is staged first (``stores.staged``)."""
    if not isinstance(item.source, Path):
        raise TypeError(f"{item.source}: an object-store input is read from a staged copy (stores.staged)")
    return item.source


class Worker:
    """One job's loaded model, detector and pipeline, and the output plan its files follow (``BatchJob``)."""

    def __init__(self, config: JobConfig, plan: OutputPlan, *, faces: JobFaces | None = None,
                 sink: Callable[[PendingWrite], None] = PendingWrite.write) -> None:
        if bool(config.faces) != (faces is not None):
            raise ValueError("a job with --faces is built with its faces file read (given.JobFaces.read), and only "
                             "such a job")
        self.config, self.plan, self.options, self.faces = config, plan, config.options, faces
        self.sink = sink  # every output file goes through it: written here, or (Ray workers) handed to the driver
        apply_budget_to_pillow()  # a Ray worker's process too
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(config.dtype, self.device)
        if self.options.paste.mask_type.startswith("parsing"):
            load_parsing_net(self.options.paste.parsing_dir)
        models = []
        for model_path in config.model_paths():
            models.append(load_gpen_file(model_path, device=self.device, dtype=self.dtype))
            logger.info("model %s: %s on %s in %s", model_path, models[-1].config, self.device, self.dtype)
        names = tuple(Path(value).name for value in (config.model, *config.more_models))
        try:  # several: each face restored by the model of its size (face_pipeline.restoration.routing)
            self.models = ModelSet(models=tuple(models), names=names)
        except ValueError as exc:
            raise UsageError(f"--model: {exc}") from exc
        self.model = self.models.largest
        # --faces: the inputs it does not list are skipped, so no input is detected
        self.detector = None if faces is not None else load_detector(
            config.detector, weights_dir=config.detector_dir, allow_download=config.allow_download,
            device=self.device, max_side=config.detector_max_side)
        self.pipeline = Pipeline(model=self.models, detector=self.detector, options=self.options)  # the one assembly

    # ------------------------------------------------------------------------------------------- the files made
    def masks(self, group: Sequence[PlannedOutput], images: torch.Tensor) -> torch.Tensor | None:
        """``--mode inpaint``'s damage masks of ``group``'s inputs ``[N, H, W]`` (None in the other modes)."""
        if self.options.restore.mode != "inpaint":
            return None
        if not self.config.inpaint_masks:  # the damage is already painted white in the images (the official demo)
            return torch.zeros((images.shape[0], 1, *images.shape[-2:]), device=images.device)
        return self.user_masks("inpaint", group, images)

    def user_masks(self, kind: str, group: Sequence[PlannedOutput], images: torch.Tensor) -> torch.Tensor | None:
        """The ``kind`` masks ("inpaint", "region", "protect": ``masks.mask_files``) of ``group``'s inputs as
        ``[N, H, W]`` 0..1 at the images' size, or None when that flag was not given."""
        files = self.config.masks().get(kind)
        if files is None:
            return None
        shape = (int(images.shape[-2]), int(images.shape[-1]))
        masks = [masks_for(files.load(item.relative, shape), batch=1, size=shape, what=files.what)
                 for item in group]
        return torch.cat(masks).to(images.device)

    def choices(self, item: PlannedOutput, images: torch.Tensor) -> list[list[FaceChoice]]:
        """The faces of one input ``images`` ``[1, 3, H, W]`` with what selection decided: detected, or given
        (--faces: checked against the image, then selected as detected faces are)."""
        region = self.user_masks("region", [item], images)
        if self.faces is None:
            return self.pipeline.find(images, region=region)
        self.faces.check(item, width=int(images.shape[-1]), height=int(images.shape[-2]))
        return self.pipeline.given(images, [self.faces.faces(item)], region=region)

    def save(self, item: PlannedOutput, image: torch.Tensor, loaded: ImageFile) -> None:
        data = encode_image(image, item.target.suffix, alpha=loaded.alpha, exif=loaded.exif,
                            icc_profile=loaded.icc_profile, name=item.target.name)
        self.sink(PendingWrite(item.target, data, overwrite=self.plan.overwrite))

    def crop_saver(self, group: Sequence[PlannedOutput], wanted: Sequence[bool] | None = None):
        """--save-crops: ``on_restored`` for ``restore_and_paste``, writing each step's crops as they come (none are
        kept), numbered per image across the steps (``wanted``: only those of these images); None without
        --save-crops."""
        if not self.config.save_crops:
            return None
        return functools.partial(self.save_crops, group, counters={}, wanted=wanted)

    def save_crops(self, group: Sequence[PlannedOutput], batch, counters: dict[int, int],
                   wanted: Sequence[bool] | None = None) -> None:
        for face, crop, restored in zip(batch.faces, batch.crops, batch.restored):
            k = counters[face.image_index] = counters.get(face.image_index, -1) + 1
            if wanted is not None and not wanted[face.image_index]:
                continue
            for kind, image in (("aligned", crop), ("restored", restored)):
                path = self.plan.crop_path(group[face.image_index], k, kind)
                data = encode_image(image, path.suffix, name=path.name)
                self.sink(PendingWrite(path, data, overwrite=self.plan.overwrite, keep_existing=True))

    def describe(self, group: Sequence[PlannedOutput], choices, images: torch.Tensor, scale: int, *,
                 wanted: Sequence[bool] | None = None) -> list[dict]:
        """--save-annotated: each image with its faces drawn, written now (``wanted``: only these); --save-json:
        their records, one per image of ``group``, returned (numbered from 0: ``write_json`` numbers the images of
        the whole run)."""
        if not (self.config.save_annotated or self.config.save_json):
            return []  # (each face's model is routed again for these records only)
        models = self.pipeline.face_models(images, choices, name=self.models.names[-1])
        if self.config.save_annotated and any(choices):
            labelled = models if self.pipeline.model_set is not None else None  # labels name a set's models
            for k, (item, image) in enumerate(zip(group, annotate_faces(images, choices, labelled))):
                if wanted is not None and not wanted[k]:
                    continue
                path = self.plan.annotated_path(item)
                data = encode_image(image, path.suffix, name=path.name)
                self.sink(PendingWrite(path, data, overwrite=self.plan.overwrite, keep_existing=True))
        if not self.config.save_json:
            return []
        report = faces_report(choices, image_size=(images.shape[-2], images.shape[-1]), restored=True,
                              model_size=self.model.config.size, output_scale=scale, models=models)
        return [{"file": item.relative.as_posix(), "output_scale": scale, **record}
                for item, record in zip(group, report["images"])]

    def write_json(self, earlier: dict[str, dict], records: list[dict]) -> None:
        """OUTPUT/faces.json (--save-json): ``face_report``'s layout, one record per image with its file name: the
        ``earlier`` run's records (``sides.read_records``) with this run's merged in (``sides.merge_records``)."""
        records = merge_records(earlier, records, [item.relative.as_posix() for item in self.plan.items])
        scales = {record["output_scale"] for record in records}
        report = faces_report([], image_size=(0, 0), restored=True, model_size=self.model.config.size,
                              output_scale=scales.pop() if len(scales) == 1 else None,
                              detector=self.config.detector if self.faces is None else "given",
                              rotations=self.options.detect.rotations if self.faces is None else None)
        report["images"] = records
        # replaced: what it held is merged in (read under this run's lock), or --overwrite was given
        write_atomically(self.plan.json_path, (faces_json(report) + "\n").encode("utf-8"), overwrite=True)

    # ------------------------------------------------------------------------------------------- one input each
    def photo(self, item: PlannedOutput) -> ItemResult:
        """Restore one input and hand its files to the sink (an image without a face is copied as it is where it
        can be). The side outputs (crops, annotated image) go first and the output image last, so an output image
        that exists says its side outputs are there (``sides``). The faces found count even when restoring fails."""
        return attempt(item, staged(self._photo))

    def _photo(self, item: PlannedOutput) -> ItemResult:
        loaded = read_image(local_file(item))
        images = loaded.pixels.to(self.device)
        choices = self.choices(item, images)
        found = len(choices[0])
        return attempt(item, functools.partial(self._restore_photo, loaded=loaded, images=images, choices=choices),
                       faces_found=found)

    def _restore_photo(self, item: PlannedOutput, *, loaded: ImageFile, images: torch.Tensor,
                       choices) -> ItemResult:
        faces = selected_faces(choices)
        found = len(choices[0])
        scale = self.options.paste.scale
        if not faces[0] and scale in (1, "auto") and same_format(local_file(item), item.target):
            try:
                data = local_file(item).read_bytes()
            except OSError as exc:
                raise InvalidImageError(f"{item.source} could not be read: {describe_os_error(exc)}") from exc
            records = self.describe([item], choices, images, 1)
            self.sink(PendingWrite(item.target, data, overwrite=self.plan.overwrite))
            logger.warning("no face in %s: copied unchanged", item.source.name)
            return ItemResult(item.source, Outcome.UNCHANGED, faces_found=found, records=tuple(records))
        result, _ = self.pipeline.restore_and_paste(images, faces, inpaint_masks=self.masks([item], images),
                                                    protect=self.user_masks("protect", [item], images),
                                                    keep_faces=False, on_restored=self.crop_saver([item]))
        records = self.describe([item], choices, images,
                                result.scale if faces[0] else 1 if scale == "auto" else int(scale))
        self.save(item, result.images[0], loaded)
        if not faces[0]:
            logger.warning("no face in %s: saved at scale %d, nothing restored", item.source.name, result.scale)
        return ItemResult(item.source, Outcome.RESTORED if faces[0] else Outcome.UNCHANGED, faces_found=found,
                          faces_restored=len(faces[0]), records=tuple(records))

    def complete_sides(self, item: PlannedOutput) -> ItemResult:
        """The side outputs an input whose output image exists lacks (``sides.lacking_sides``): its faces.json
        record (the output scale read from the output image) and its crops (its faces restored again; the output
        image is not handed on again). Succeeds as UNCHANGED (the output image stays as it is)."""
        return attempt(item, staged(self._complete_sides))

    def _complete_sides(self, item: PlannedOutput) -> ItemResult:
        loaded = read_image(local_file(item))
        images = loaded.pixels.to(self.device)
        choices = self.choices(item, images)
        faces = selected_faces(choices)
        if self.config.save_crops and faces[0]:
            batch = self.pipeline.restore(self.pipeline.align(images, faces), inpaint_masks=self.masks([item], images))
            self.save_crops([item], batch, counters={})
        records = []
        if self.config.save_json:
            width, _ = source_size(item.target)
            records = self.describe([item], choices, images, max(1, round(width / images.shape[-1])))
        logger.info("%s: wrote the side outputs an earlier run left out", item.source)
        return ItemResult(item.source, Outcome.UNCHANGED, records=tuple(records))

    # ------------------------------------------------------------------------------------------- a video's frames
    def video(self, items: Sequence[PlannedOutput]) -> Iterator[ItemResult]:
        """``items`` as one frame sequence (``frames``): detect, track and smooth over it segment by segment (a frame
        that cannot be used, or a change of size, starts a new segment: a resolution change is like a scene cut, its
        frames are restored as usual), then restore in chunks of ``FRAMES_PER_CHUNK`` frames at fixed positions,
        never across a segment start (each frame is read twice; memory stays bounded). ``items`` may hold frames the
        plan skips: one whose output exists is context (tracked, never written nor yielded: a resumed run tracks
        again from ``frames.track_start``, so the frames it writes equal an uninterrupted run's); another ends a
        segment. Yields the result of each frame to do: one that cannot be read at once (skipped), the others once
        their chunk is made (a chunk that fails fails its frames)."""
        sequence = list(items)
        todo = {i for i, item in enumerate(sequence) if item.skip is None}
        if not todo:
            return
        cache: dict[int, SeenFrame] = {}

        def seen(i: int) -> SeenFrame:
            if i not in cache:
                cache[i] = self._see(sequence[i])
            return cache[i]

        first = min(todo)
        writes_ids = self.config.save_json or self.config.save_annotated  # track ids: numbered from the first frame
        smoothing = self.pipeline.temporal_filter() is not None  # a chunk's frames depend on the chunk before
        start = 0 if writes_ids else track_start(seen, first, chunk=FRAMES_PER_CHUNK, context=smoothing)
        if start < first:
            logger.info("video: %d frame(s) before %s tracked again (from %s, not written) so that the frames written "
                        "match an uninterrupted run", first - start, sequence[first].source.name,
                        sequence[start].source.name)
        for i in range(start, len(sequence)):
            if not seen(i).usable and i in todo:
                yield ItemResult(sequence[i].source, Outcome.SKIPPED, seen(i).reason, bad_input=True)
        next_id = 0
        for segment in segments(range(start, len(sequence)), seen):
            head = seen(segment[0])
            if segment[0] > 0 and seen(segment[0] - 1).usable and seen(segment[0] - 1).size != head.size:
                (w0, h0), (w1, h1) = seen(segment[0] - 1).size or (0, 0), head.size or (0, 0)
                logger.warning("video: %s is %dx%d, the frames before it %dx%d: a new segment starts there (no face "
                               "track continues across a change of size)", sequence[segment[0]].source.name, w1, h1,
                               w0, h0)
            cuts = scene_cuts(torch.cat([t for i in segment if (t := seen(i).thumbnail) is not None]))
            stable = self.pipeline.stabilise([list(seen(i).choices) for i in segment], cuts=cuts)
            stable, next_id = renumber_tracks(stable, next_id)
            tracked = dict(zip(segment, stable))
            temporal = self.pipeline.temporal_filter()  # one per segment: no track continues into the next
            chunks: dict[int, list[int]] = {}
            for i in segment:
                chunks.setdefault(i // FRAMES_PER_CHUNK, []).append(i)
            groups = list(chunks.values())
            for n, group in enumerate(groups):
                if not todo.intersection(group):
                    continue
                # smoothing: a skipped chunk before this one is restored, not written, for its frames' history
                context = [groups[n - 1]] if temporal is not None and n and not todo.intersection(groups[n - 1]) \
                    else []
                for frames in (*context, group):
                    yield from self._chunk([sequence[i] for i in frames], [tracked[i] for i in frames],
                                           [len(seen(i).choices) for i in frames], size=head.size or (0, 0),
                                           temporal=temporal, frames=frames, context=frames is not group)

    def _see(self, item: PlannedOutput) -> SeenFrame:
        """The detection pass over one frame: its size, thumbnail and faces (not kept: its pixels)."""
        if item.skip is not None and not item.exists:
            return SeenFrame(None)  # reported by the plan already
        try:
            frame = load_image(local_file(item)).to(self.device)
        except InvalidImageError as exc:
            return SeenFrame(None, reason=str(exc) if item.skip is None else "")
        choices = self.pipeline.find(frame, region=self.user_masks("region", [item], frame))
        return SeenFrame((frame.shape[-1], frame.shape[-2]), frame_thumbnails(frame), tuple(choices[0]))

    def _chunk(self, group: list[PlannedOutput], tracked: list, found: list[int], *, size: tuple[int, int],
               temporal: TemporalFilter | None = None, frames: list[int] | None = None,
               context: bool = False) -> Iterator[ItemResult]:
        """One chunk of frames of ``size`` restored and pasted together; the results of its frames to write (those
        the plan does not skip: the others are context), in order. A frame that can no longer be read, or whose size
        is no longer ``size`` (its file changed since its faces were found), is left out: skipped or failed alone.
        ``temporal``: the segment's temporal smoothing, ``frames`` the frames' numbers in the sequence; ``context``:
        a chunk with nothing to write restored all the same, for the smoothing of the chunk after it."""
        keep, loaded = [], []
        for k, item in enumerate(group):
            try:
                one = read_image(local_file(item))
            except Exception as exc:  # noqa: BLE001 - failure() raises again what is not a per-input failure
                if item.skip is None:
                    yield failure(item, exc, faces_found=found[k])
                continue
            height, width = one.pixels.shape[-2:]
            if (width, height) == size:
                keep.append(k)
                loaded.append(one)
            elif item.skip is None:
                yield ItemResult(item.source, Outcome.FAILED, f"{item.source.name} is {width}x{height} now but was "
                                 f"{size[0]}x{size[1]}, as its sequence's frames, when its faces were found (the file "
                                 f"changed during the run); run again to restore it", faces_found=found[k])
        group, tracked, found = [group[k] for k in keep], [tracked[k] for k in keep], [found[k] for k in keep]
        numbers = None if frames is None else [frames[k] for k in keep]
        if not any(item.skip is None for item in group) and not (context and group):
            return
        wanted = [item.skip is None for item in group]
        try:
            images = torch.cat([one.pixels for one in loaded]).to(self.device)
            choices = [[dataclasses.replace(c, face=dataclasses.replace(c.face, image_index=i))
                        for c in tracked[i]] for i in range(len(group))]
            chunk = selected_faces(choices)
            result, _ = self.pipeline.restore_and_paste(images, chunk, inpaint_masks=self.masks(group, images),
                                                        keep_faces=False, on_restored=self.crop_saver(group, wanted),
                                                        temporal=temporal, frames=numbers)
        except Exception as exc:  # noqa: BLE001 - failure() raises again what is not a per-input failure
            yield from (failure(item, exc, own_input=False, faces_found=n)
                        for item, n, w in zip(group, found, wanted) if w)
            return
        restored = [len(faces) for faces in chunk]
        try:  # side outputs first, as for photos: a frame written has its crops (written as they came)
            records = self.describe(group, choices, images, result.scale, wanted=wanted)
        except Exception as exc:  # noqa: BLE001 - as above
            yield from (failure(item, exc, own_input=False, faces_found=n)
                        for item, n, w in zip(group, found, wanted) if w)
            return
        records = records or [None] * len(group)
        for item, image, one, n, r, record, w in zip(group, result.images, loaded, found, restored, records, wanted):
            if not w:
                continue
            made = ItemResult(item.source, Outcome.RESTORED if r else Outcome.UNCHANGED, faces_found=n,
                              faces_restored=r, records=(record,) if record is not None else ())
            yield attempt(item, functools.partial(self._write_frame, image=image, loaded=one, made=made),
                          faces_found=n)

    def _write_frame(self, item: PlannedOutput, *, image: torch.Tensor, loaded: ImageFile,
                     made: ItemResult) -> ItemResult:
        self.save(item, image, loaded)
        return made
