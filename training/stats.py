"""Dataset statistics: images and boxes per class per split, and the box-size distribution (table + PNG).

Example:
    >>> import tempfile
    >>> from training.synth import write_dataset
    >>> data = write_dataset(tempfile.mkdtemp(), n=10, size=(64, 64), seed=0)
    >>> stats = dataset_stats(data)
    >>> sorted(stats.splits), stats.splits["train"].images
    (['train', 'val'], 8)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.datasets import SPLITS, class_names, load_data_yaml, read_labels, split_images

# Box size bins by the square root of the box area relative to the image (COCO uses 32/96 px at 640).
SIZE_BINS = (0.0, 0.05, 0.15, 0.4, 1.01)
SIZE_LABELS = ("tiny <5%", "small 5-15%", "medium 15-40%", "large >40%")


@dataclass
class SplitStats:
    images: int = 0
    background_images: int = 0  # images without any box (defect-free parts)
    images_per_class: dict[str, int] = field(default_factory=dict)
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    size_histogram: dict[str, int] = field(default_factory=dict)


@dataclass
class DatasetStats:
    data: str
    names: dict[int, str]
    splits: dict[str, SplitStats]
    rel_sizes: dict[str, np.ndarray]  # split -> sqrt(box area / image area) per box
    rel_wh: dict[str, np.ndarray]  # split -> (N, 2) relative width, height

    def to_text(self) -> str:
        names = [self.names[k] for k in sorted(self.names)]
        splits = list(self.splits)
        width = max(12, *(len(n) + 2 for n in names))
        header = f"{'':<{width}}" + "".join(f"{s + ' img':>12}{s + ' box':>12}" for s in splits)
        lines = [f"Dataset {self.data}", header]
        for n in names:
            lines.append(
                f"{n:<{width}}"
                + "".join(
                    f"{self.splits[s].images_per_class.get(n, 0):>12}"
                    f"{self.splits[s].boxes_per_class.get(n, 0):>12}"
                    for s in splits
                )
            )
        lines.append(
            f"{'(no defect)':<{width}}"
            + "".join(f"{self.splits[s].background_images:>12}{'':>12}" for s in splits)
        )
        lines.append(
            f"{'all images':<{width}}" + "".join(f"{self.splits[s].images:>12}{'':>12}" for s in splits)
        )
        lines.append("Box size (sqrt of box area / image area):")
        for s in splits:
            hist = self.splits[s].size_histogram
            lines.append(f"  {s:<6}" + "  ".join(f"{k}: {v}" for k, v in hist.items()))
        return "\n".join(lines)


def dataset_stats(data: str | Path) -> DatasetStats:
    path, cfg = load_data_yaml(data)
    names = class_names(cfg)
    splits: dict[str, SplitStats] = {}
    rel_sizes: dict[str, np.ndarray] = {}
    rel_wh: dict[str, np.ndarray] = {}
    seen_entries: list[object] = []
    for split in SPLITS:
        if not cfg.get(split) or cfg[split] in seen_entries:
            continue  # before `dataset split`, train and val both name every image: count them once
        seen_entries.append(cfg[split])
        st = SplitStats(
            images_per_class=dict.fromkeys(names.values(), 0),
            boxes_per_class=dict.fromkeys(names.values(), 0),
        )
        whs = []
        for image in split_images(path, split):
            labels = read_labels(image)
            st.images += 1
            if len(labels.class_ids) == 0:
                st.background_images += 1
            for c in set(labels.class_ids.tolist()):
                st.images_per_class[names.get(c, str(c))] = (
                    st.images_per_class.get(names.get(c, str(c)), 0) + 1
                )
            for c in labels.class_ids.tolist():
                st.boxes_per_class[names.get(c, str(c))] = st.boxes_per_class.get(names.get(c, str(c)), 0) + 1
            whs.append(labels.boxes_norm[:, 2:4])
        wh = np.concatenate(whs) if whs else np.zeros((0, 2))
        size = np.sqrt(wh[:, 0] * wh[:, 1])
        counts, _ = np.histogram(size, bins=SIZE_BINS)
        st.size_histogram = dict(zip(SIZE_LABELS, counts.tolist()))
        splits[split], rel_sizes[split], rel_wh[split] = st, size, wh
    return DatasetStats(str(path), names, splits, rel_sizes, rel_wh)


def plot_stats(stats: DatasetStats, out: str | Path) -> Path:
    """Two panels: boxes per class per split (bars) and the box-size distribution (histogram)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [stats.names[k] for k in sorted(stats.names)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    width = 0.8 / max(1, len(stats.splits))
    x = np.arange(len(names))
    for i, (split, st) in enumerate(stats.splits.items()):
        ax1.bar(x + i * width, [st.boxes_per_class.get(n, 0) for n in names], width, label=split)
    ax1.set_xticks(x + width * (len(stats.splits) - 1) / 2, names, rotation=30, ha="right")
    ax1.set(ylabel="boxes", title="Boxes per class and split")
    ax1.legend()
    for split, sizes in stats.rel_sizes.items():
        ax2.hist(sizes, bins=40, range=(0, 1), alpha=0.6, label=split)
    ax2.set(xlabel="sqrt(box area / image area)", ylabel="boxes", title="Box sizes")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
