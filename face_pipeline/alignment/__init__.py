"""Alignment: five landmarks -> a similarity transform onto a template -> square crops at the model's size.

``templates.py`` (GPEN and FFHQ five-point templates), ``transform.py`` (Umeyama similarity, inverse),
``warp.py`` (batched ``cv2.warpAffine``-like warps with grid_sample), ``align.py`` (``align_faces``, ``realign``).
"""

from .align import align_faces, crop_faces, estimate_alignment, face_affines, realign
from .templates import TEMPLATES, template_points
from .transform import invert_affine, similarity_transform
from .warp import INTERPOLATIONS, sampling_thetas, warp_from_one_image, warp_images

__all__ = ["face_affines", "TEMPLATES", "INTERPOLATIONS", "template_points", "similarity_transform", "invert_affine",
           "estimate_alignment", "sampling_thetas", "warp_images", "warp_from_one_image", "crop_faces",
           "align_faces", "realign"]
