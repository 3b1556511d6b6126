"""What turns a BGR image into the network's input, as data: it travels in the model's
metadata, so training, the runtime and any other program read the same rules."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import cv2


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to turn a BGR image into the network's input.

    It travels, as JSON, inside the ONNX model's metadata, so any tool can reproduce the input.
    Segmentation defaults follow the dataset authors' HSV rule (H 121-132 on OpenCV's 0-179
    scale) with S >= 60 and a light clean-up, which measurably agrees better with their own
    saved masks (see `python -m train.segcheck`).
    """

    input_size: int = 128
    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0
    interpolation: str = "area"
    mask_background: bool = False
    hue_min: int = 121
    hue_max: int = 132
    sat_min: int = 60
    val_min: int = 50
    open_kernel: int = 3
    min_component_px: int = 40
    # "is there a stained cell at all?": a broader violet-magenta range than the segmentation,
    # which misses the magenta-stained cells of some slides (~15% of images have no pixel in
    # H 121-132); with this range 0.1% of the dataset's images fall under min_cell_fraction.
    cell_hue_min: int = 115
    cell_hue_max: int = 175
    cell_sat_min: int = 50
    min_cell_fraction: float = 0.002
    # acquisition normalisation of the resized image: "none", or "white_patch" (each channel
    # scaled so its `white_percentile` -- the smear's bright plasma background, present in every
    # smear -- maps to `white_target`), which undoes lamp brightness and white balance
    normalise: str = "none"
    white_percentile: float = 90.0
    white_target: float = 250.0
    #: the lowest level a channel's background is taken to have (a black image is not
    #: brightened without bound)
    white_floor: float = 8.0
    # the image's scale (edge_infer.image.scale): the training images' red-cell diameter as a
    # share of the image side at the network's input (0: the model has no scale rule, every
    # image is read whole), and the magnification range read whole: below it an image holds
    # several fields and is read as tiles at the training scale, above it less than one
    # field (a close-up, a single-cell crop) and it is not recognised
    cell_diameter_share: float = 0.0
    field_scale_min: float = 0.7
    field_scale_max: float = 2.5

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> PreprocessSpec:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing parameters: {', '.join(unknown)}")
        spec = cls(**data)
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be RGB or BGR, not {self.channel_order!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}")
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}, not {self.normalise!r}")
        if not 50.0 <= self.white_percentile <= 100.0 or not 1.0 <= self.white_target <= 255.0:
            raise ValueError("white_percentile must be in 50-100 and white_target in 1-255")
        if not 1.0 <= self.white_floor <= self.white_target:
            raise ValueError("white_floor must be in 1-white_target")
        if not 0.0 <= self.cell_diameter_share < 0.5:
            raise ValueError("cell_diameter_share must be in 0-0.5")
        if not 0.0 < self.field_scale_min < 1.0 < self.field_scale_max:
            raise ValueError("field_scale_min must be in 0-1 and field_scale_max above 1")
        if not 8 <= self.input_size <= 1024:
            raise ValueError(f"input_size {self.input_size} is out of range")


NORMALISATIONS = ("none", "white_patch")
INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}
