"""The anomaly candidates of docs/training.md (section 7), measured on an MVTec-layout set (e.g. KolektorSDD).

    python bench/anomaly_candidates.py meanstd ../shared/datasets/kolektorsdd --imgsz 640,256
    python bench/anomaly_candidates.py pool runs/anomaly/kolektor-final ../shared/datasets/kolektorsdd
    python bench/anomaly_candidates.py train runs/anomaly/cand-hairline ../shared/datasets/kolektorsdd \\
        --defects '{"crack": {"size": [0.5, 1.2], "contrast": [20, 100], "polarity": "dark"}}' --steps 400

- `meanstd`: no network: per-pixel mean and standard deviation of the aligned good images; a pixel's score is
  |x - mean| / std, the image score the max of its 3 x 3 mean (the issue's one-CPU-second baseline).
- `pool`: a trained run's network, the image score taken as the max of the k x k mean of the map for several
  k (how much smoothing of the map helps).
- `train`: the segmentation network with a given set of synthetic defects for a fixed number of steps (equal
  compute for every candidate), the image AUROC on the test set printed every `--eval-every` seconds.
- `fuse`: a statistics run and a network run at the same input size, their maps fused: each divided by the
  median image score of the held-out good images, then w x statistics + (1 - w) x network, image score = the
  max of the fused map. w is chosen on the held-out good images and the same images with the network run's
  painted defects (never on the test set); the test figures of every w are printed for the record.

    python bench/anomaly_candidates.py fuse runs/anomaly/kolektorsdd-statistics-640 \
        runs/anomaly/kolektor-final ../shared/datasets/kolektorsdd
Image AUROC on test/good + test/<defect>; pixel AUROC where masks exist.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _pair(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.split(","))
    return h, w


def _test_arrays(root: Path, size: tuple[int, int]):
    from training.anomaly.images import mvtec_eval_set, read_many, read_mask

    es = mvtec_eval_set(root)
    _, good = read_many(es.good, size)
    _, bad = read_many(es.defects, size)
    masks = np.stack([read_mask(m, size) if m else np.zeros(size, bool) for m in es.masks])
    return good, bad, masks


def _report(name: str, good_maps: np.ndarray, bad_maps: np.ndarray, masks: np.ndarray, pool: int) -> None:
    import cv2

    from training.anomaly.metrics import auroc, escape_at_false_reject

    def score(m: np.ndarray) -> float:
        return float(cv2.blur(m, (pool, pool)).max()) if pool > 1 else float(m.max())

    sg = np.array([score(m) for m in good_maps])
    sb = np.array([score(m) for m in bad_maps])
    img = auroc(np.r_[sg, sb], np.r_[np.zeros(len(sg)), np.ones(len(sb))])
    pix = auroc(np.concatenate([good_maps.ravel(), bad_maps.ravel()]),
                np.concatenate([np.zeros(good_maps.size, bool), masks.ravel()]))  # fmt: skip
    curve = escape_at_false_reject(sg, sb)
    esc = ", ".join(f"{100 * float(k):g}% FR: {100 * v['escape_rate']:.0f}%" for k, v in curve.items())
    print(f"{name}: image AUROC {img:.3f}, pixel AUROC {pix:.3f}; escape at {esc}")


def meanstd(args: argparse.Namespace) -> None:
    from training.anomaly.images import list_images, read_many, training_folder

    t, c = time.perf_counter(), time.process_time()
    _, good_train = read_many(list_images(training_folder(args.data)), args.imgsz)
    g = good_train[..., 0].astype(np.float32)
    mean, std = g.mean(0), g.std(0) + 1.0
    good, bad, masks = _test_arrays(args.data, args.imgsz)
    gm = np.abs(good[..., 0].astype(np.float32) - mean) / std
    bm = np.abs(bad[..., 0].astype(np.float32) - mean) / std
    _report("mean/std per pixel", gm, bm, masks, 3)
    print(f"  {time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} s CPU (with reading)")


def pool(args: argparse.Namespace) -> None:
    from training.anomaly.train import load_net, torch_scores

    net, cfg, info = load_net(args.run)
    good, bad, masks = _test_arrays(args.data, cfg.imgsz)

    def maps(images: np.ndarray) -> np.ndarray:
        return torch_scores(net, images, 1)[1]  # the sigmoid maps, as the exported graph

    gm, bm = maps(good), maps(bad)
    print(
        f"{args.run}: {info['step']} steps, {info['train_s'] / 60:.1f} min, {info['cpu_s'] / 60:.1f} CPU-min"
    )
    for k in args.pools:
        _report(f"  pool {k}", gm, bm, masks, k)


def train(args: argparse.Namespace) -> None:
    from training.anomaly.images import mvtec_eval_set
    from training.anomaly.train import AnomalyTrainConfig, train_anomaly

    cfg = AnomalyTrainConfig(
        good=str(args.data), imgsz=args.imgsz, crop=args.crop, defects=json.loads(args.defects),
        max_steps=args.steps, hours=100.0, threads=args.threads, log_every_s=60,
    )  # fmt: skip
    t, c = time.perf_counter(), time.process_time()
    train_anomaly(cfg, args.run, eval_set=mvtec_eval_set(args.data), eval_every_s=args.eval_every)
    print(f"{time.perf_counter() - t:.0f} s wall, {time.process_time() - c:.0f} s CPU")


def fuse(args: argparse.Namespace) -> None:
    from training.anomaly.card import held_out_paths
    from training.anomaly.defects import parse_defects, synthesise
    from training.anomaly.images import read_many
    from training.anomaly.metrics import auroc
    from training.anomaly.statistics import load_statistics, score_maps
    from training.anomaly.train import load_net, torch_scores

    stats, scfg, _ = load_statistics(args.stats)
    net, ncfg, info = load_net(args.net)
    if tuple(scfg.imgsz) != tuple(ncfg.imgsz):
        raise SystemExit(f"input sizes differ: {scfg.imgsz} vs {ncfg.imgsz}")
    held_paths = held_out_paths(args.stats)
    if sorted(p.resolve() for p in held_paths) != sorted(p.resolve() for p in held_out_paths(args.net)):
        raise SystemExit(
            "the two runs held out different good images: the weight would be chosen on trained ones"
        )
    _, held = read_many(held_paths, scfg.imgsz)
    rng = np.random.default_rng(0)
    specs = parse_defects(ncfg.defects)
    painted = np.stack(
        [synthesise(rng, np.ascontiguousarray(im), specs, 3)[0] for im in held for _ in range(3)]
    )
    good, bad, masks = _test_arrays(args.data, scfg.imgsz)

    def net_maps(images: np.ndarray) -> np.ndarray:
        return torch_scores(net, images, 1)[1]  # the sigmoid maps, as the exported graph

    t, c = time.perf_counter(), time.process_time()
    maps = {name: (score_maps(stats, a)[1], net_maps(a)) for name, a in
            (("held", held), ("painted", painted), ("good", good), ("bad", bad))}  # fmt: skip
    # each map in units of its held-out good parts' median image score
    s_unit = float(np.median(maps["held"][0].reshape(len(held), -1).max(1)))
    n_unit = float(np.median(maps["held"][1].reshape(len(held), -1).max(1)))

    def fused(name: str, w: float) -> np.ndarray:
        s_map, n_map = maps[name]
        return w * s_map / s_unit + (1 - w) * n_map / n_unit

    def image_scores(m: np.ndarray) -> np.ndarray:
        return m.reshape(len(m), -1).max(1)

    print(f"{args.net}: {info['step']} steps; {len(held)} held-out good, {len(painted)} painted")
    chosen, best = None, -1.0
    for w in args.weights:
        sh, sp = image_scores(fused("held", w)), image_scores(fused("painted", w))
        held_auc = auroc(np.r_[sh, sp], np.r_[np.zeros(len(sh)), np.ones(len(sp))])
        if held_auc > best + 1e-9:
            chosen, best = w, held_auc
        print(f"  w {w:.2f}: held-out + painted AUROC {held_auc:.3f}")
        _report(f"    test set, w {w:.2f}", fused("good", w), fused("bad", w), masks, 1)
    print(f"chosen on held-out + painted: w {chosen:.2f}; {time.perf_counter() - t:.0f} s wall, "
          f"{time.process_time() - c:.0f} s CPU")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("meanstd")
    m.add_argument("data", type=Path)
    m.add_argument("--imgsz", type=_pair, default=(640, 256))
    p = sub.add_parser("pool")
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--pools", type=lambda s: [int(v) for v in s.split(",")], default=[1, 3, 5, 9, 15])
    t = sub.add_parser("train")
    t.add_argument("run", type=Path)
    t.add_argument("data", type=Path)
    t.add_argument("--defects", required=True, help="JSON: kind -> {share, size, contrast, polarity}")
    t.add_argument("--steps", type=int, default=400)
    t.add_argument("--imgsz", type=_pair, default=(640, 256))
    t.add_argument("--crop", type=_pair, default=(256, 256))
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--eval-every", type=float, default=150.0)
    f = sub.add_parser("fuse")
    f.add_argument("stats", type=Path, help="statistics run folder")
    f.add_argument("net", type=Path, help="network run folder (same input size, same held-out images)")
    f.add_argument("data", type=Path)
    f.add_argument(
        "--weights", type=lambda s: [float(v) for v in s.split(",")], default=[0, 0.25, 0.5, 0.75, 1]
    )
    args = ap.parse_args()
    {"meanstd": meanstd, "pool": pool, "train": train, "fuse": fuse}[args.cmd](args)


if __name__ == "__main__":
    main()
