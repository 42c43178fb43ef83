"""Label semantics from dataset.json: plain labels, region-based labels and the ignore label."""
from __future__ import annotations

from dataclasses import dataclass, field

from longnet.errors import DatasetError


def _refuse_duplicate_values(labels: dict, source: str) -> None:
    """Two names for one value (or one region) make the label of a voxel ambiguous: name both."""
    seen: dict[tuple, str] = {}
    for name, v in labels.items():
        key = tuple(sorted(set(v))) if isinstance(v, (list, tuple)) else (v,)
        if key in seen:
            what = f"value {v}" if len(key) == 1 else f"region {list(key)}"
            raise DatasetError(f"labels {seen[key]!r} and {name!r} both have {what}: each label value (or region) "
                               "needs exactly one name", source)
        seen[key] = name


@dataclass
class LabelManager:
    labels: dict  # name -> int | list[int]
    regions_class_order: list[int] | None = None
    has_regions: bool = False
    ignore_label: int | None = None
    all_labels: list[int] = field(default_factory=list)

    @classmethod
    def from_dataset_json(cls, dj: dict, source: str = "dataset.json") -> "LabelManager":
        labels = dj.get("labels")
        if not isinstance(labels, dict) or not labels:
            raise DatasetError("'labels' must be a non-empty mapping of name -> integer", source)
        has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())
        all_labels: set[int] = set()
        ignore = None
        for name, v in labels.items():
            values = v if isinstance(v, (list, tuple)) else [v]
            for x in values:
                if not isinstance(x, int) or isinstance(x, bool) or x < 0:
                    raise DatasetError(f"label {name!r} has invalid value {x!r} (must be a non-negative integer)", source)
                all_labels.add(x)
            if name == "ignore":
                if isinstance(v, (list, tuple)):
                    raise DatasetError("the ignore label must be a single integer", source)
                ignore = int(v)
        _refuse_duplicate_values(labels, source)
        if labels.get("background", 0) != 0:
            raise DatasetError("'background' must be label 0", source)
        if ignore is not None and ignore != max(all_labels):
            raise DatasetError("the ignore label must be the highest label value", source)
        rco = dj.get("regions_class_order")
        if has_regions and rco is None:
            raise DatasetError("region-based labels need 'regions_class_order'", source)
        lm = cls(dict(labels), rco, has_regions, ignore, sorted(all_labels))
        if not has_regions:
            non_ignore = [x for x in lm.all_labels if x != ignore]
            if non_ignore != list(range(len(non_ignore))):
                raise DatasetError(f"labels must be consecutive integers starting at 0, got {non_ignore}", source)
        return lm

    @property
    def foreground_labels(self) -> list[int]:
        return [x for x in self.all_labels if x != 0 and x != self.ignore_label]

    @property
    def foreground_regions(self) -> list:
        """Regions (tuples of labels) excluding background, as nnU-Net defines them."""
        out = []
        for name, v in self.labels.items():
            if name in ("background", "ignore"):
                continue
            vals = tuple(v) if isinstance(v, (list, tuple)) else (v,)
            if vals == (0,):
                continue
            out.append(vals if len(vals) > 1 else vals[0])
        return out

    @property
    def num_segmentation_heads(self) -> int:
        if self.has_regions:
            return len(self.foreground_regions)
        return len([x for x in self.all_labels if x != self.ignore_label])

    @property
    def valid_values(self) -> set[int]:
        vals = set(self.all_labels)
        vals.add(0)
        return vals
