"""Anomaly models trained from good parts only (issue 29): a small segmentation network learns, on the line's
own good images, to find synthetic defects shaped like the ones the line expects (our generator's scratch,
crack, pit, stain shapes and generic blobs); reviewed NG parts, when there are some, join as real examples.

- `images`: folders of good / defect images and their masks (MVTec AD layout or plain folders).
- `defects`: which defects to synthesise (kinds, sizes, contrasts) and painting them onto a real image.
- `statistics`: the other method, for aligned parts: per-pixel statistics of the good images (numpy, seconds),
  exported as a small ONNX graph of its constants (`--method statistics`).
- `net`: the network (torch, imported lazily by the modules that train or export).
- `train`: the training loop: time budget, checkpoints, resume, progress.
- `export`: ONNX in the anomaly contract (input `input`; outputs `pred_score`, `anomaly_map`; metadata).
- `metrics`: image/pixel AUROC, AUPRO, the operating point from good parts (numpy only).
- `evaluate`: a model over good and defect images: metrics, operating point, plots, the card's entries.
"""
