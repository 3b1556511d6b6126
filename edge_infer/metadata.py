"""The model's self-description: a typed, versioned schema of the ONNX `metadata_props`.

Export writes it (`ModelMetadata.to_props`), the runtime, the CLI, the server and the page read
it (`from_props`, `public_json`); every metadata key is spelled here and nowhere else. Values are
JSON, so any tool that reads ONNX can use the model without this package.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .image.spec import PreprocessSpec

#: marks a model written by `python -m export`; its value is the schema version
SCHEMA_KEY = "edge_infer.schema"
SCHEMA_VERSION = 3

#: the graph's input and output names (train.graph_guards computes the last six)
INPUT_NAME = "image"
PROBABILITIES = "probabilities"
OOD_SCORE = "ood_score"
IMAGE_STATS = "image_stats"
#: the columns of the `image_stats` output, in order (train.graph_guards computes them), and the
#: family each belongs to (check-site says which one made an image unlike the training images):
#: colour (CIE Lab means and spreads), the stain's hue and share, sharpness at two scales
IMAGE_STAT_FAMILIES = {
    "L_mean": "colour",
    "a_mean": "colour",
    "b_mean": "colour",
    "L_std": "colour",
    "a_std": "colour",
    "b_std": "colour",
    "stain_hue_mean": "stain",
    "stain_share": "stain",
    "log_laplacian_var": "sharpness",
    "log_laplacian_var_half": "sharpness",
}
IMAGE_SCORE = "image_score"
CELL_FRACTION = "cell_fraction"
STATUS_CODE = "status_code"
REASON_CODE = "reason_code"
LABEL_INDEX = "label_index"
#: an optional output (models exported with it): the class activation map of the predicted
#: class, [N, h, w] in [0, 1], h x w the last feature map's grid
CAM = "cam"
GRAPH_OUTPUTS = (
    PROBABILITIES,
    OOD_SCORE,
    IMAGE_STATS,
    IMAGE_SCORE,
    CELL_FRACTION,
    STATUS_CODE,
    REASON_CODE,
    LABEL_INDEX,
)

#: a constant output of the graph: the sha256 of the metadata it was exported with
METADATA_DIGEST = "metadata_sha256"


def metadata_digest(props: Mapping[str, str]) -> bytes:
    """The sha256 of a model's metadata_props (sorted, as JSON): export puts it into the graph,
    the runtime compares it with the metadata it reads."""
    canonical = json.dumps(dict(props), sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).digest()


DATASET = "ALL PBS images, Aria et al. 2021, Kaggle DOI 10.34740/KAGGLE/DSV/2175623"
INTENDED_USE = "screening aid for trained staff; not a diagnosis"


class MetadataError(ValueError):
    """The metadata is missing, malformed or from a newer schema."""


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its short name (records, folders), the words people read, and
    whether it is a malignant diagnosis."""

    name: str
    display: str
    malignant: bool


#: the dataset's classes (Aria et al. 2021): folder name, what it means, malignant or not
ALL_PBS_CLASSES = (
    ClassInfo("Benign", "Benign (hematogone)", False),
    ClassInfo("Early", "Early Pre-B ALL", True),
    ClassInfo("Pre", "Pre-B ALL", True),
    ClassInfo("Pro", "Pro-B ALL", True),
)


@dataclass(frozen=True)
class InputInfo:
    """How to feed the graph: NHWC float32 in [0, 1], at `size` px, in `channel_order`."""

    name: str
    size: int
    channel_order: str
    layout: str = "NHWC"
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)


#: image_stats key: the lower bound of some statistics (by name); below one, an image is out of
#: distribution whatever its score
IMAGE_FLOORS = "floors"


@dataclass(frozen=True)
class Guards:
    """The out-of-distribution rules, for people: the graph applies them itself.
    `feature_threshold` applies to the `ood_score` output; `image_stats` describes the
    image-statistics guard (its threshold on `image_score`, the statistics' names and the
    training images' median and interquartile range of each); `codes` maps the graph's
    `status_code` and `reason_code` outputs to the words of edge_infer.result."""

    feature_threshold: float | None
    feature_rule: str = ""
    feature_score: str = "min squared Mahalanobis distance of pooled features to class means"
    image_stats: dict[str, Any] | None = None
    codes: dict[str, list[str | None]] = field(default_factory=dict)

    def image_floors(self) -> dict[int, float]:
        """The image guard's lower bounds, by the statistic's index in `image_stats` output."""
        image = self.image_stats or {}
        names = list(image.get("stats", ()))
        return {names.index(n): float(v) for n, v in (image.get(IMAGE_FLOORS) or {}).items()}

    def image_out_of_range(self, score: float, stats: Sequence[float]) -> bool:
        """The image-statistics rule, as the graph applies it: the score over its threshold, or
        a statistic under its floor (a blur far past training that the nearest-neighbour score
        alone can miss)."""
        threshold = (self.image_stats or {}).get("threshold")
        if threshold is not None and score > threshold:
            return True
        return any(stats[i] < floor for i, floor in self.image_floors().items())


#: what each split's figure means to a reader: the random split shares patients between train and
#: test (optimistic); the pseudo-patient split holds whole look-alike groups out (the honest one)
SPLIT_TITLES = {
    "split": "random image split (optimistic)",
    "group_split": "pseudo-patient split (the honest figure)",
}
HONEST_SPLIT = "group_split"


@dataclass(frozen=True)
class SplitMetrics:
    """Headline test figures of one split (the random image split, or pseudo-patient groups)."""

    split: str
    n: int
    accuracy: float
    macro_f1: float
    malignant_sensitivity: float
    benign_specificity: float
    ece: float
    per_class_recall: dict[str, float] = field(default_factory=dict)
    #: test confusion matrix: rows the true class, columns the prediction, in the model's order
    confusion: tuple[tuple[int, ...], ...] = ()

    @property
    def title(self) -> str:
        return SPLIT_TITLES.get(self.split, self.split)


@dataclass(frozen=True)
class ModelMetadata:
    classes: tuple[ClassInfo, ...]
    input: InputInfo
    preprocess: PreprocessSpec
    version: str
    temperature: float
    uncertain_below: float
    guards: Guards
    parameters: int = 0
    #: the shipped model's test figures, then the same recipe on other splits (honest figures)
    metrics: tuple[SplitMetrics, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    #: a class's own uncertain threshold where it differs from `uncertain_below` (e.g. a
    #: stricter one for Benign: a missed leukemia costs more than a review)
    uncertain_below_by_class: dict[str, float] = field(default_factory=dict)
    #: the training images' acquisition statistics (edge_infer.site.stats.reference_from)
    site_reference: dict[str, Any] | None = None
    dataset: str = DATASET
    intended_use: str = INTENDED_USE

    # ------------------------------------------------------------------ derived
    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def uncertain_threshold(self, name: str) -> float:
        """The confidence under which an answer of class `name` is uncertain."""
        return self.uncertain_below_by_class.get(name, self.uncertain_below)

    def display(self, name: str) -> str:
        return next((c.display for c in self.classes if c.name == name), name)

    def is_malignant(self, name: str) -> bool:
        return next((c.malignant for c in self.classes if c.name == name), False)

    def costliest_error(self) -> str | None:
        """The most frequent malignant-called-benign confusion on the honest split (else the
        first with a confusion matrix), in one sentence; None when there is none to report."""
        with_cm = [m for m in self.metrics if m.confusion]
        if not with_cm:
            return None
        m = next((x for x in with_cm if x.split == HONEST_SPLIT), with_cm[0])
        cls = self.classes
        pairs = [
            (m.confusion[t][p], t, p)
            for t in range(len(cls))
            for p in range(len(cls))
            if cls[t].malignant and not cls[p].malignant
        ]
        n, t, p = max(pairs, default=(0, 0, 0))
        if n == 0:
            return None
        malignant = sum(sum(m.confusion[i]) for i in range(len(cls)) if cls[i].malignant)
        return (
            f"The costly error left is {cls[t].display} called {cls[p].display}: {n} of "
            f"{malignant} malignant test images on the {m.title}."
        )

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["preprocess"] = json.loads(self.preprocess.to_json())
        return d

    def to_props(self) -> dict[str, str]:
        """ONNX metadata_props: one JSON value per top-level field, plus the schema marker."""
        d = self.to_dict()
        return {SCHEMA_KEY: json.dumps(SCHEMA_VERSION), **{k: json.dumps(v) for k, v in d.items()}}

    def public_json(self) -> dict[str, Any]:
        """What people and the page read: all but check-site's training reference."""
        d = self.to_dict()
        for m, out in zip(self.metrics, d["metrics"], strict=True):
            out["title"] = m.title
        d.pop("site_reference", None)  # check-site's data: `info --json --full` has it
        d["known_weakness"] = self.costliest_error()
        d[SCHEMA_KEY] = SCHEMA_VERSION
        return d

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        if SCHEMA_KEY not in props:
            raise MetadataError(
                "no edge_infer metadata (not a model written by `python -m export`)"
            )
        try:
            raw = {k: json.loads(v) for k, v in props.items()}
        except json.JSONDecodeError as exc:
            raise MetadataError(f"metadata is not valid JSON ({exc})") from None
        except RecursionError:
            raise MetadataError("metadata nested too deeply to be read") from None
        version = raw.pop(SCHEMA_KEY)
        if not isinstance(version, int) or version != SCHEMA_VERSION:
            raise MetadataError(
                f"metadata schema {version!r}, this runtime reads schema {SCHEMA_VERSION}"
                + (
                    " (re-export the model)"
                    if isinstance(version, int) and version < SCHEMA_VERSION
                    else ""
                )
            )
        try:
            meta = cls(
                classes=tuple(ClassInfo(**c) for c in raw["classes"]),
                input=InputInfo(
                    **{**raw["input"], "value_range": tuple(raw["input"]["value_range"])}
                ),
                preprocess=PreprocessSpec.from_json(raw["preprocess"]),
                version=str(raw["version"]),
                temperature=float(raw["temperature"]),
                uncertain_below=float(raw["uncertain_below"]),
                uncertain_below_by_class={
                    str(k): float(v) for k, v in raw.get("uncertain_below_by_class", {}).items()
                },
                guards=Guards(**raw["guards"]),
                parameters=int(raw.get("parameters", 0)),
                metrics=tuple(
                    SplitMetrics(
                        **{**m, "confusion": tuple(tuple(r) for r in m.get("confusion", ()))}
                    )
                    for m in raw.get("metrics", ())
                ),
                provenance=dict(raw.get("provenance", {})),
                site_reference=raw.get("site_reference"),
                dataset=str(raw.get("dataset", DATASET)),
                intended_use=str(raw.get("intended_use", INTENDED_USE)),
            )
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise MetadataError(
                f"malformed edge_infer metadata ({type(exc).__name__}: {exc})"
            ) from None
        meta.validate()
        return meta

    def validate(self) -> None:
        """Every value the decision depends on, in range and in this runtime's words: a file
        whose metadata says otherwise is refused at open, never read at the first image."""
        from .result import decision_codes

        names = [c.name for c in self.classes]
        if len(names) < 2 or len(set(names)) != len(names) or not all(names):
            raise MetadataError(f"class names must be two or more and unique, not {names}")
        if not all(isinstance(c.malignant, bool) for c in self.classes):
            raise MetadataError("each class's 'malignant' must be true or false")
        if not (math.isfinite(self.temperature) and 0.05 <= self.temperature <= 20.0):
            raise MetadataError(f"temperature {self.temperature} is out of range (0.05-20)")
        if not (math.isfinite(self.uncertain_below) and 0.0 <= self.uncertain_below <= 1.0):
            raise MetadataError(f"uncertain_below {self.uncertain_below} is not in 0-1")
        for name, t in self.uncertain_below_by_class.items():
            if name not in names or not (math.isfinite(t) and 0.0 <= t <= 1.0):
                raise MetadataError(f"uncertain threshold of {name!r} ({t}) is not a class in 0-1")
        span = self.input.value_range[1] - self.input.value_range[0]
        if not math.isclose(self.preprocess.scale * 255.0, span, rel_tol=1e-6):
            raise MetadataError(
                f"preprocess scale {self.preprocess.scale} does not map 0-255 to the input's "
                f"range {list(self.input.value_range)}"
            )
        if self.input.channel_order != self.preprocess.channel_order:
            raise MetadataError("input and preprocess metadata give other channel orders")
        threshold = self.guards.feature_threshold
        if threshold is not None and not math.isfinite(threshold):
            raise MetadataError(f"feature threshold {threshold} is not a number")
        image = self.guards.image_stats or {}
        for name, floor in (image.get(IMAGE_FLOORS) or {}).items():
            if name not in image.get("stats", ()) or not math.isfinite(float(floor)):
                raise MetadataError(f"image floor {name!r} ({floor}) is not a statistic's number")
        if self.guards.codes != decision_codes():
            raise MetadataError(
                "the status and reason codes differ from this runtime's "
                f"({self.guards.codes} instead of {decision_codes()})"
            )
