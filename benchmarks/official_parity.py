"""Every difference between the default pipeline and the official GPEN one, measured: the official preset with one
difference switched back to the default, run on the official pipeline vectors, against the official output.

    python benchmarks/official_parity.py [--vectors ../shared/gpen/pipeline] [--names grace_hopper ...]

For each photo of ../shared/gpen/pipeline (grace_hopper, pexels_woman_large_face, solvay_crop) and both variants
(parsenet: the narrow ParseNet of the vectors, the official preset; allface: the official mask of an all-face parse,
the official_rect preset) it gives the pipeline the vector's faces (box and landmarks from <name>.json, detection
bypassed), runs align -> restore -> paste with the compact 512 GPEN of tests/data (seeded random weights, float32,
2 CPU threads, as the vectors were made) and prints, per row, d = per-pixel max over channels of |ours - official|
in 8-bit levels: mean and max over the whole output. The first row is the preset itself; "default pipeline" is
every default at once. Rows of a scale-2 output are compared after an INTER_AREA reduction to the input's size.
docs/official_parity.md holds a run of it and what each row means. The GPEN and the parser are random networks:
what a row changes on real photos with released weights differs in size (colour correction, for one, answers to the
model's colour cast), not in kind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from face_pipeline.options import PipelineOptions  # noqa: E402
from face_pipeline.pipeline import Pipeline  # noqa: E402
from face_pipeline.presets import apply_preset  # noqa: E402
from face_pipeline.types import DetectedFace  # noqa: E402
from gpen_arch.formats.loading import load_gpen_file  # noqa: E402

NAMES = ("grace_hopper", "pexels_woman_large_face", "solvay_crop")
VARIANTS = {"parsenet": ("official", ""), "allface": ("official_rect", "_allface")}
DEFAULTS = PipelineOptions()

#: row label -> the option values switched back to the default (one difference each)
ROWS: dict[str, dict] = {
    "official preset (no difference)": {},
    "alignment fit in float64 (exact)": {"fit_precision": "float64"},
    "bicubic crop (align)": {"crop_interpolation": "bicubic"},
    "bicubic warp back, antialiased when shrinking (paste)": {"paste_interpolation": "bicubic"},
    "float aligned crop (not rounded to 8 bits)": {"round_crops": False},
    "float restored crop (not truncated to 8 bits)": {"truncate_restored": False},
    "float warped-back face (not rounded)": {"round_pasted": False},
    "float blend (not rounded by convertScaleAbs)": {"round_output": False},
    "all intermediates float (the four above)": {"round_crops": False, "truncate_restored": False,
                                                 "round_pasted": False, "round_output": False},
    "colour correction on": {"color_correction": True},
    "gray images kept gray (keep_gray)": {"keep_gray": True},
    "no small-face blur": {"small_face_blur": 0.0},
    "mask: rounded_rect, feather 0.1 (the default)": {"mask_type": "rounded_rect"},
    "mask: ellipse, feather 0.1": {"mask_type": "ellipse"},
    "mask: parsing (feathered, 0.1; with hair)": {"mask_type": "parsing"},
    "scale 2 (compared after INTER_AREA to 1x)": {"scale": 2},
    "faces in area order (default) instead of score": {"sort_by": "area"},
    "default pipeline (every default at once)": None,
}


def read_rgb(path: Path) -> torch.Tensor:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)[None].float() / 255


def to_bgr8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.permute(1, 2, 0).numpy()[..., ::-1] * 255).round().astype(np.uint8)


def measure(model, folder: Path, parsing_dir: str, name: str, variant: str, changes: dict | None) -> tuple[float, int]:
    preset, suffix = VARIANTS[variant]
    meta = json.loads((folder / f"{name}.json").read_text())
    faces = [DetectedFace(box=tuple(f["box"]), score=1.0, landmarks=tuple(tuple(p) for p in f["landmarks"]),
                          image_index=0) for f in meta["faces"]]
    if changes is None:
        options = PipelineOptions.of(parsing_dir=parsing_dir)
    else:
        official = apply_preset(PipelineOptions.of(parsing_dir=parsing_dir), preset)
        options = PipelineOptions.of(**{**_flat(official), **changes})
    if changes is not None and changes.get("sort_by"):  # the pipeline's selection order, as detection would give it
        faces = sorted(faces, key=lambda f: -f.area)
    images = read_rgb(folder / f"{name}_input.png")
    pipeline = Pipeline(model=model, options=options)
    result = pipeline.paste(pipeline.restore(pipeline.align(images, [faces])))
    ours = to_bgr8(result.images[0])
    official = cv2.imread(str(folder / f"{name}_output{suffix}.png"), cv2.IMREAD_COLOR)
    if ours.shape != official.shape:
        ours = cv2.resize(ours, (official.shape[1], official.shape[0]), interpolation=cv2.INTER_AREA)
    d = np.abs(ours.astype(np.int32) - official.astype(np.int32)).max(-1)
    return float(d.mean()), int(d.max())


def _flat(options: PipelineOptions) -> dict:
    """Every field of every stage record, by name."""
    values: dict = {}
    for stage in ("detect", "video", "align", "restore", "paste"):
        values.update(getattr(options, stage).__dict__)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=Path, default=REPO_ROOT.parent / "shared" / "gpen" / "pipeline")
    parser.add_argument("--names", nargs="+", default=list(NAMES))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_gpen_file(REPO_ROOT / "tests" / "data" / "gpen" / "compact" /
                           "compact_512_cm2_n0.0625_s64.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(args.vectors / "parsenet_512_b8_c4-32_seed1.safetensors",
                    Path(tmp) / "parsing_parsenet.safetensors")
        columns = [(name, variant) for name in args.names for variant in VARIANTS]
        print("mean / max of d (levels) against the official output; columns: photo, variant")
        print("| difference from the official preset | " + " | ".join(f"{n} {v}" for n, v in columns) + " |")
        print("|---|" + "---|" * len(columns))
        for label, changes in ROWS.items():
            cells = []
            for name, variant in columns:
                mean, worst = measure(model, args.vectors, tmp, name, variant, changes)
                cells.append(f"{mean:.3f} / {worst}")
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
