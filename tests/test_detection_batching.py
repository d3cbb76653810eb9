"""Detection batched over frames on the device (``detection/batched.py``): the batch gives the faces each frame gives
alone, our post-processing gives what kornia's and facexlib's own give, and detection + alignment of a batch makes
a number of host syncs that does not grow with the frames or the faces.

Frames are 512x640 cuts of real photos: a group photo (many small faces), two portraits, a black frame (no face).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SKIP_CUDA, data_file, require_shared
from torch.overrides import TorchFunctionMode

from face_pipeline.alignment import align_faces
from face_pipeline.detection import base, batched, load_detector
from face_pipeline.image import load_image

TORCH_BACKENDS = ["yunet", "retinaface_mobile0.25"]
HEIGHT, WIDTH = 512, 640


def _fit(image: torch.Tensor) -> torch.Tensor:
    """``[1, 3, h, w]`` -> ``[3, HEIGHT, WIDTH]``: the top-left cut, padded with grey where the photo is smaller."""
    frame = torch.full((3, HEIGHT, WIDTH), 0.5)
    h, w = min(HEIGHT, image.shape[-2]), min(WIDTH, image.shape[-1])
    frame[:, :h, :w] = image[0, :, :h, :w]
    return frame


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """``[4, 3, 512, 640]``: the Solvay group photo (many faces), the astronaut, a black frame, Grace Hopper."""
    solvay = load_image(require_shared("faces", "solvay_conference_1927.png"))
    astronaut = load_image(data_file("faces", "astronaut.jpg"))
    hopper = load_image(data_file("faces", "grace_hopper.jpg"))
    return torch.stack([_fit(solvay), _fit(astronaut), torch.zeros(3, HEIGHT, WIDTH), _fit(hopper)])


@pytest.fixture(scope="module")
def detectors():
    return {name: load_detector(name, weights_dir=data_file("detectors")) for name in TORCH_BACKENDS}


def _as_array(faces) -> np.ndarray:
    """A list of DetectedFace -> ``[N, 15]``: box, score, landmarks."""
    return np.array([[*f.box, f.score, *np.ravel(f.landmarks)] for f in faces], np.float64).reshape(-1, 15)


def _assert_same_faces(got, expected, *, what: str, atol: float = 1e-4) -> None:
    assert len(got) == len(expected), f"{what}: {len(got)} faces against {len(expected)}"
    a, b = _as_array(got), _as_array(expected)
    # pixel coordinates of a 640 px frame: 1e-4 px is float32 rounding of the network's batched convolutions
    np.testing.assert_allclose(a[:, [0, 1, 2, 3, *range(5, 15)]], b[:, [0, 1, 2, 3, *range(5, 15)]], atol=atol,
                               rtol=0, err_msg=what)
    np.testing.assert_allclose(a[:, 4], b[:, 4], atol=1e-5, rtol=0, err_msg=f"{what}: scores")


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
def test_a_batch_finds_what_each_frame_finds_alone(detectors, frames, backend):
    detector = detectors[backend]
    together = detector.detect(frames)
    counts = [len(faces) for faces in together]
    assert counts[0] >= 10 and counts[1] == 1 and counts[2] == 0 and counts[3] == 1, counts
    for index, faces in enumerate(together):
        assert all(f.image_index == index for f in faces)
        alone = detector.detect(frames[index:index + 1])[0]
        _assert_same_faces(faces, alone, what=f"{backend}, frame {index}")


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
def test_chunks_of_the_batch_find_the_same_faces(detectors, frames, backend, monkeypatch):
    detector = detectors[backend]
    whole = detector.detect(frames)
    monkeypatch.setattr(base, "PIXELS_PER_FORWARD", HEIGHT * WIDTH * 3 // 2)  # one frame per network run
    chunked = detector.detect(frames)
    for index, (got, expected) in enumerate(zip(chunked, whole)):
        _assert_same_faces(got, expected, what=f"{backend}, frame {index}, chunked")


def test_yunet_post_processing_matches_kornias(detectors, frames):
    """Our decode/filter/NMS against ``kornia.contrib.FaceDetector.postprocess``, image by image."""
    detector = detectors["yunet"]
    with torch.no_grad():
        ours = detector._detect_batch(frames, detector.score_threshold)
        for index in range(len(frames)):
            detector.detector.confidence_threshold = detector.score_threshold
            reference = detector.detector(frames[index:index + 1] * 255.0)[0].numpy()  # box, landmarks, score
            reference = np.concatenate([reference[:, :4], reference[:, 14:15], reference[:, 4:14]], axis=1)
            assert ours[index].shape == reference.shape, f"frame {index}"
            np.testing.assert_allclose(ours[index], reference, atol=1e-4, rtol=0, err_msg=f"frame {index}")
    assert len(ours[0]) >= 10 and len(ours[2]) == 0


def test_retinaface_post_processing_matches_facexlibs(detectors, frames):
    """Our decode/filter/NMS against facexlib's ``batched_detect_faces`` on the same batch."""
    detector = detectors["retinaface_mobile0.25"]
    with torch.no_grad():
        ours = detector._detect_batch(frames, detector.score_threshold)
        bgr = torch.round(frames.flip(1) * 255.0).permute(0, 2, 3, 1)
        boxes, points = detector.model.batched_detect_faces(bgr, conf_threshold=detector.score_threshold,
                                                            nms_threshold=0.4, use_origin_size=True)
    for index, (box, point) in enumerate(zip(boxes, points)):
        reference = np.concatenate([np.asarray(box, np.float32).reshape(-1, 5),
                                    np.asarray(point, np.float32).reshape(-1, 10)], axis=1)
        assert ours[index].shape == reference.shape, f"frame {index}"
        np.testing.assert_allclose(ours[index], reference, atol=1e-4, rtol=0, err_msg=f"frame {index}")
    assert len(ours[0]) >= 10 and len(ours[2]) == 0


def test_one_nms_keeps_equal_boxes_of_different_images():
    """Two images with the same two overlapping boxes: each keeps its best; a third, far box survives; the
    score filter is strict; rows come out by descending score; split_by_image cuts to keep_top_k."""
    box = torch.tensor([[10.0, 10.0, 50.0, 50.0], [12.0, 12.0, 52.0, 52.0], [200.0, 200.0, 240.0, 240.0]])
    boxes = torch.stack([box, box])  # [2, 3, 4]
    points = torch.arange(2 * 3 * 10, dtype=torch.float32).reshape(2, 3, 10)
    scores = torch.tensor([[0.95, 0.97, 0.9], [0.99, 0.96, 0.91]])
    table = batched.select(boxes, points, scores, threshold=0.9, nms_threshold=0.3).numpy()
    assert table[:, 0].tolist() == [1, 0, 1]  # image indices, by descending score: 0.99, 0.97, 0.91
    np.testing.assert_allclose(table[:, 5], [0.99, 0.97, 0.91])
    np.testing.assert_array_equal(table[0, 6:], points[1, 0].numpy())
    np.testing.assert_array_equal(table[1, 1:5], box[1].numpy())
    rows = batched.split_by_image(table, 3)
    assert [len(r) for r in rows] == [1, 2, 0] and rows[1][:, 4].tolist() == pytest.approx([0.99, 0.91])
    assert [len(r) for r in batched.split_by_image(table, 3, keep_top_k=1)] == [1, 1, 0]
    top = batched.select(boxes, points, scores, threshold=0.9, nms_threshold=0.3, top_k=1).numpy()
    np.testing.assert_allclose(top[:, 5], [0.99, 0.97])  # each image's best only, before the NMS


def test_decoding_matches_the_libraries():
    from facexlib.detection.retinaface_utils import batched_decode, batched_decode_landm
    from kornia.models.yunet.processors import decode

    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(2, 50, 14, generator=generator)
    priors = torch.rand(50, 4, generator=generator) * 0.5 + 0.1
    ours = torch.cat([batched.decode_boxes(loc[..., :4], priors, (0.1, 0.2)),
                      batched.decode_points(loc[..., 4:], priors, 0.1)], dim=-1)
    for index in range(2):
        torch.testing.assert_close(ours[index], decode(loc[index], priors, [0.1, 0.2]), atol=0, rtol=0)
    torch.testing.assert_close(batched.decode_boxes(loc[..., :4], priors, (0.1, 0.2)),
                               batched_decode(loc[..., :4].clone(), priors[None], [0.1, 0.2]), atol=0, rtol=0)
    torch.testing.assert_close(batched.decode_points(loc[..., 4:], priors, 0.1),
                               batched_decode_landm(loc[..., 4:], priors[None], [0.1, 0.2]), atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------- host syncs
#: Tensor methods and torch functions that wait for the device (on a GPU), counted by ``SyncCounter``.
READS = {"item", "tolist", "cpu", "numpy", "__array__", "__bool__", "__float__", "__int__", "__index__", "nonzero",
         "unique", "masked_select", "nms"}
#: Calls that copy host data to the device (a blocking copy on a GPU) when they name a device.
WRITES = {"to", "as_tensor", "tensor", "cuda"}


class SyncCounter(TorchFunctionMode):
    """Counts the calls that would be host syncs on a GPU: device -> host reads, boolean-mask indexing (its size
    depends on the values) and host -> device copies (``.to`` / ``torch.tensor`` naming a device). On the CPU none
    of them waits, but each would, so the count is what a GPU run pays."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func)).split(".")[-1]
        if name in READS:
            self.counts[name] += 1
        elif name in WRITES and ("device" in kwargs or any(isinstance(a, (str, torch.device)) for a in args[1:])):
            self.counts[name] += 1
        elif name == "__getitem__" and len(args) > 1 and _has_mask(args[1]):
            self.counts["mask index"] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _has_mask(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _detect_and_align(detector, frames: torch.Tensor) -> tuple[int, SyncCounter]:
    with SyncCounter() as counter:
        found = detector.detect(frames)
        faces = [face for per_frame in found for face in per_frame]
        align_faces(frames, faces, size=64)
    return len(faces), counter


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
def test_host_syncs_do_not_grow_with_frames_or_faces(detectors, frames, backend):
    detector = detectors[backend]
    detector.detect(frames[:1])  # prior boxes built and cached for this size
    portraits = frames[[1, 3]]  # two frames, one face each
    crowds = torch.cat([frames[[0, 1, 2, 3]], frames[[0, 3]]])  # six frames, dozens of faces
    few, small = _detect_and_align(detector, portraits)
    many, large = _detect_and_align(detector, crowds)
    assert few == 2 and many >= 20
    assert large.counts == small.counts, f"{backend}: {dict(small.counts)} for 2 faces, {dict(large.counts)} " \
                                         f"for {many} faces on 6 frames"
    assert small.total <= 12, dict(small.counts)


def test_sync_counter_counts_what_it_should():
    x = torch.rand(4)
    with SyncCounter() as counter:
        x.sum().item()
        x[x > 0.5]
        x.to("cpu")
        x.to(torch.float64)  # a dtype change alone: no transfer
        x.tolist()
    assert counter.counts == Counter({"item": 1, "mask index": 1, "to": 1, "tolist": 1})


@pytest.mark.skipif(not torch.cuda.is_available(), reason=SKIP_CUDA + "needs a CUDA device")
@pytest.mark.parametrize("backend", TORCH_BACKENDS)
def test_cuda_syncs_do_not_grow_with_frames(detectors, frames, backend):
    """On the GPU: CUDA's own sync debug mode counts the synchronising calls."""
    import warnings

    detector = load_detector(backend, weights_dir=data_file("detectors"), device="cuda")
    frames = frames.cuda()
    detector.detect(frames)  # warm-up: priors cached, kernels loaded

    def count(batch: torch.Tensor) -> int:
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                found = detector.detect(batch)
                align_faces(batch, [f for per_frame in found for f in per_frame], size=64)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    few = count(frames[[1, 3]])
    many = count(torch.cat([frames, frames[[0, 3]]]))
    assert many == few, f"{backend}: {few} syncs for 2 frames, {many} for 6"
    cpu_faces = detectors[backend].detect(frames.cpu())
    gpu_faces = detector.detect(frames)
    for index, (got, expected) in enumerate(zip(gpu_faces, cpu_faces)):
        _assert_same_faces(got, expected, what=f"{backend} on CUDA, frame {index}", atol=0.05)


def test_priors_are_built_once_per_size(detectors, frames, monkeypatch):
    detector = detectors["yunet"]
    detector.detect(frames[:1])
    built = []
    original = type(detector)._priors
    monkeypatch.setattr(type(detector), "_priors", staticmethod(lambda h, w: built.append((h, w)) or original(h, w)))
    detector.detect(frames[:2])
    assert built == []
    detector.detect(F.pad(frames[:1], (0, 32)))
    assert len(built) == 2  # the two passes of the new size
