"""Bad values handed to the library (not the CLI) get the project's own errors: PipelineOptions fields, half-precision
and NaN images, NaN landmarks, a pipeline without a model or detector, faces not restored yet."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from face_pipeline.alignment.transform import similarity_transform
from face_pipeline.errors import DetectorError, InvalidImageError, RestoreError
from face_pipeline.pipeline import DetectOptions, Pipeline, PipelineOptions, find_faces
from face_pipeline.types import DetectedFace, FaceBatch

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("field, value, message", [
    ("score_threshold", 5, r"score_threshold must be a number from 0 to 1, got 5"),
    ("score_threshold", NAN, r"score_threshold must be a number from 0 to 1, got nan"),
    ("min_face_size", NAN, r"min_face_size must be a number of at least 0, got nan"),
    ("min_face_size", -1.0, r"min_face_size must be a number of at least 0, got -1\.0"),
    ("max_faces", -1, r"max_faces must be a whole number of at least 0, got -1"),
    ("max_faces", 1.5, r"max_faces must be a whole number of at least 0, got 1\.5"),
    ("strength", NAN, r"strength must be a number from 0 to 1, got nan"),
    ("strength", "1", r"strength must be a number from 0 to 1, got '1'"),
    ("feather", NAN, r"feather must be a number from 0 to 0\.5, got nan"),
    ("feather", 0.7, r"feather must be a number from 0 to 0\.5, got 0\.7"),
    ("smoothing", INF, r"smoothing must be a number from 0 to 1, got inf"),
    ("max_output_size", 10, r"max_output_size must be a whole number from 64 to 65536, got 10"),
    ("max_output_size", -8192, r"max_output_size must be a whole number from 64 to 65536, got -8192"),
    ("batch_size", 0, r"batch_size must be a whole number of at least 1, got 0"),
    ("batch_size", True, r"batch_size must be a whole number of at least 1, got True"),
    ("indices", (0, -1), r"indices must be whole numbers of at least 0, got \(0, -1\)"),
    ("scale", 3, r"scale must be one of 1, 2, 4 or 'auto'; got 3"),
    ("mask_type", "circle", r"mask_type must be one of .*; got 'circle'"),
    ("color_correction", "yes", r"color_correction must be True or False, got 'yes'"),
    ("track", None, r"track must be True or False, got None"),
    ("parsing_dir", 3, r"parsing_dir must be a folder path or None, got int"),
])
def test_every_documented_option_is_checked(field, value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        PipelineOptions.of(**{field: value})


def test_zero_max_output_size_means_the_default_and_numpy_numbers_pass():
    assert PipelineOptions.of(max_output_size=0).paste.max_output_size == 8192
    options = PipelineOptions.of(strength=np.float32(0.5), feather=np.float64(0.2), max_faces=np.int64(2))
    assert options.restore.strength == 0.5 and options.detect.max_faces == 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_are_refused_before_alignment(dtype):
    images = torch.rand(1, 3, 32, 32).to(dtype)
    message = rf"images must be float32 RGB in 0\.\.1, got {dtype} \(half precision is too coarse for alignment"
    with pytest.raises(InvalidImageError, match=message):
        find_faces(images, detector=None, options=DetectOptions())
    with pytest.raises(InvalidImageError, match=message):
        Pipeline(model=None).restore_and_paste(images, [[]])


@pytest.mark.parametrize("bad", [NAN, INF])
def test_nan_or_inf_images_are_refused(bad):
    images = torch.rand(1, 3, 32, 32)
    images[0, 2, 3, 4] = bad
    with pytest.raises(InvalidImageError, match="the images contain NaN or infinite values"):
        find_faces(images, detector=None, options=DetectOptions())


def test_nan_landmarks_are_refused_with_our_message():
    points = ((10.0, 10.0), (20.0, 10.0), (15.0, 15.0), (11.0, 20.0), (NAN, 20.0))
    with pytest.raises(ValueError, match=r"a face's box, score and landmarks must be finite numbers; got box"):
        DetectedFace(box=(0.0, 0.0, 30.0, 30.0), score=0.9, landmarks=points, image_index=0)
    with pytest.raises(ValueError, match="the landmarks contain NaN or infinite values"):
        similarity_transform(np.array(points), np.zeros((5, 2)))


def test_a_pipeline_without_a_model_or_detector_says_so():
    images = torch.rand(1, 3, 32, 32)
    with pytest.raises(RestoreError, match=r"this pipeline has no restoration model \(it was built with model=None"):
        Pipeline(model=None).align(images, [[]])
    with pytest.raises(RestoreError, match=r"this pipeline has no restoration model"):
        Pipeline(model=None).restore_and_paste(images, [[]])
    with pytest.raises(DetectorError, match=r"this pipeline has no face detector \(it was built with detector=None"):
        Pipeline(model=None).find(images)


def test_faces_not_restored_yet_have_no_restored_faces():
    empty = torch.zeros(0, 3, 8, 8)
    affines = torch.zeros(0, 2, 3, dtype=torch.float64)
    batch = FaceBatch(images=torch.rand(1, 3, 32, 32), faces=(), crops=empty, affines=affines,
                      inverse_affines=affines, size=8, template="gpen")
    with pytest.raises(ValueError, match=r"these faces have not been restored yet: run the restore step"):
        batch.restored_faces()
    assert dataclasses.replace(batch, restored=empty).restored_faces() is empty
