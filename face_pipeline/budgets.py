"""The budgets of what the face pipeline reads from outside (images, face-index text), stated in one place.

Every input from outside costs bounded time and memory, checked before anything is allocated, with a message that
names the input and the limit. The weight files (GPEN, detector and parsing networks: file, tensor and record sizes,
pickle and header sizes, ONNX graph sizes and constant folding) are held to ``gpen_arch/formats/budgets.py``, the
network package's own statement (it imports nothing from here). What is held to what, and where it is checked:

- a weight file (.pth/.pt/.bin/.safetensors/.onnx): ``gpen_arch/formats/budgets.py``, checked in
  ``gpen_arch/formats/file_scan.py`` and ``gpen_arch/formats/onnx_graph.py``;
- an image (a file or a host's tensor): ``MAX_SIDE`` per side, ``MAX_PIXELS`` in all, checked from the header in
  ``image.check_budget``;
- a face-index text ("0,2-5"): ``MAX_INDICES_TEXT`` characters, indices up to ``MAX_FACE_INDEX``, checked in
  ``selection.parse_indices``;
- a detection threshold: 0 (the detector's own) or at least ``MIN_SCORE_THRESHOLD``, checked in
  ``options.DetectOptions`` and by the face detector loader node;
- faces restored per image: at most ``MAX_FACES_PER_IMAGE``, held in ``selection.choose_faces`` (with a note);
- faces given instead of detected (the CLI's ``--faces FILE``, the Faces from JSON node's text): at most
  ``MAX_FACES_JSON`` bytes (characters of a node's text), checked before the text is parsed (a file: from its size,
  before it is read), and at most ``MAX_GIVEN_FACES`` faces per image, in ``given_faces.parse_faces``.
"""

from __future__ import annotations

#: The one budget of an image, read from a file or handed over as a tensor (``image.check_budget``): at most
#: ``MAX_SIDE`` pixels per side (an 8K frame is 7680; 16K is the most a paste at 2x of an 8K frame gives) and
#: ``MAX_PIXELS`` in all (a 16K frame, 15360x8640, or a 12000x12000 scan; its float32 RGB copy is 1.8 GB). A file is
#: checked from its header before it is decoded, so an image beyond it costs no memory; the command line makes it
#: Pillow's decompression-bomb limit too (``image.apply_budget_to_pillow``).
MAX_SIDE = 16384
MAX_PIXELS = 150_000_000

#: The largest face index ``selection.parse_indices`` accepts (an image with more than 10,000 faces is not a photo)
#: and the longest index text it reads: what a typed or posted string may cost is bounded (at most 10,000 indices, and
#: no range is ever expanded beyond them).
MAX_FACE_INDEX = 9999
MAX_INDICES_TEXT = 1000

#: The lowest detection threshold accepted (0 means the detector's own default, in the CLI and the nodes alike).
#: Below it the detectors report noise as faces: on the 29-face Solvay photo, 32-1051 detections at 0.2..0 with
#: OpenCV YuNet, 29-11052 with RetinaFace, 59-750 with kornia YuNet; at 0.3, 29-31 with each.
MIN_SCORE_THRESHOLD = 0.3

#: At most this many faces of one image are restored (the others are reported, "beyond the cap"): each face costs a
#: forward of the model, so an image's time stays bounded whatever a detector reports. A crowd photo's faces beyond
#: it can be restored by tiling the photo, or by ``indices``.
MAX_FACES_PER_IMAGE = 500

#: The largest faces file (``--faces FILE``) or faces text (Faces from JSON) read: 64 MiB, in bytes of a file or
#: characters of a text. A ``--save-json`` record is about 0.7 KB per face, so this holds some 90,000 faces (a run
#: over a large photo archive); parsing it costs about 1 s and a few hundred MB. Larger is refused before parsing:
#: split the images over several files.
MAX_FACES_JSON = 64 * 2**20

#: At most this many faces are read for one image of a faces file: as many as ``selection.parse_indices`` can number
#: (``MAX_FACE_INDEX`` + 1); ``MAX_FACES_PER_IMAGE`` of them are restored, as for detected faces.
MAX_GIVEN_FACES = MAX_FACE_INDEX + 1
