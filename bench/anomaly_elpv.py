"""ELPV solar cells (image-level labels) laid out for anomaly training and evaluation, in the MVTec layout.

    pip install -e ".[bench]"       # elpv-dataset: not needed to run edge-inspect, only for this measurement
    python bench/anomaly_elpv.py runs/data/elpv
    edge-inspect anomaly train runs/data/elpv --config configs/training/elpv-anomaly.yaml \\
        --out runs/models/elpv-anomaly --eval runs/data/elpv

ELPV (Buerhop-Lutz et al. 2018; Deitsch et al. 2019; CC BY-NC-SA 4.0): 2,624 electroluminescence images of
solar cells, 300 x 300 px grey, each with a defect probability from experts (0, 1/3, 2/3, 1) and the cell
type (mono, poly). Cells with probability 0 are good: a seeded 70 % of them train (`train/good`), the
rest are `test/good`; cells with probability 1 are `test/defect` (no masks: image metrics only), those in
between are left out (the experts were unsure). `--type mono|poly` keeps one cell type.
The images are written under the folder given (never into the repository).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dst", type=Path, help="folder to write the MVTec layout into (e.g. runs/data/elpv)")
    ap.add_argument("--train-share", type=float, default=0.7)
    ap.add_argument("--type", choices=("mono", "poly"), default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        raise SystemExit("needs the ELPV package: pip install -e '.[bench]' (elpv-dataset)") from None

    images, probs, types = load_dataset()
    keep = np.ones(len(images), bool) if args.type is None else types == args.type
    good = np.flatnonzero(keep & (probs == 0))
    bad = np.flatnonzero(keep & (probs == 1))
    order = np.random.default_rng(args.seed).permutation(good)
    n_train = round(len(order) * args.train_share)
    plan = {"train/good": order[:n_train], "test/good": order[n_train:], "test/defect": bad}
    for folder, idx in plan.items():
        out = args.dst / folder
        out.mkdir(parents=True, exist_ok=True)
        for i in idx:
            cv2.imwrite(str(out / f"cell{i:04d}_{types[i]}.png"), images[i])
        print(f"{folder}: {len(idx)} cells")


if __name__ == "__main__":
    main()
