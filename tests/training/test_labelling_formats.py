"""Label Studio JSON and CVAT for images 1.1 XML: import of each tool's real export, export of batches
(labels and pre-annotations), and round trips dataset -> tool file -> dataset without loss."""

# ruff: noqa: E501  (the CVAT export below keeps its long lines, as CVAT writes them)
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from training.datasets import import_dataset, read_labels
from training.synth import CLASSES, make_sample, write_dataset

REPO = Path(__file__).resolve().parents[2]
DEMO_ONNX = REPO / "models" / "demo" / "model.onnx"


def _images(folder: Path, names: list[str], size: tuple[int, int] = (120, 200)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    for name in names:
        img, _ = make_sample(rng, size, ok_probability=1.0)
        cv2.imwrite(str(folder / name), img)


# What Label Studio 1.x writes for "Export > JSON" (fields as it writes them; two uploads, one local file).
LABEL_STUDIO_EXPORT = [
    {
        "id": 11,
        "annotations": [
            {
                "id": 21,
                "completed_by": 1,
                "result": [
                    {
                        "original_width": 200,
                        "original_height": 120,
                        "image_rotation": 0,
                        "value": {
                            "x": 10.0,
                            "y": 25.0,
                            "width": 20.0,
                            "height": 50.0,
                            "rotation": 0,
                            "rectanglelabels": ["scratch"],
                        },
                        "id": "k3Jd8aQ1",
                        "from_name": "label",
                        "to_name": "image",
                        "type": "rectanglelabels",
                        "origin": "manual",
                    },
                    {
                        "original_width": 200,
                        "original_height": 120,
                        "image_rotation": 0,
                        "value": {"choices": ["NG"]},
                        "id": "c1",
                        "from_name": "verdict",
                        "to_name": "image",
                        "type": "choices",
                        "origin": "manual",
                    },
                ],
                "was_cancelled": False,
                "ground_truth": False,
                "created_at": "2026-11-30T09:12:01.120915Z",
                "updated_at": "2026-11-30T09:12:01.120935Z",
                "lead_time": 14.2,
                "prediction": {},
                "result_count": 0,
                "task": 11,
                "project": 3,
            }
        ],
        "file_upload": "8f2c1a9e-part_01.jpg",
        "drafts": [],
        "predictions": [],
        "data": {"image": "/data/upload/3/8f2c1a9e-part_01.jpg"},
        "meta": {},
        "created_at": "2026-11-30T09:10:44.371000Z",
        "updated_at": "2026-11-30T09:12:01.171000Z",
        "inner_id": 1,
        "total_annotations": 1,
        "cancelled_annotations": 0,
        "total_predictions": 0,
        "project": 3,
    },
    {  # labelled twice (the newer answer counts), one box rotated by 90 degrees
        "id": 12,
        "annotations": [
            {
                "id": 22,
                "result": [
                    {
                        "original_width": 200,
                        "original_height": 120,
                        "image_rotation": 0,
                        "value": {
                            "x": 50,
                            "y": 50,
                            "width": 10,
                            "height": 10,
                            "rotation": 0,
                            "rectanglelabels": ["pit"],
                        },
                        "id": "old",
                        "from_name": "label",
                        "to_name": "image",
                        "type": "rectanglelabels",
                    }
                ],
                "was_cancelled": False,
                "updated_at": "2026-11-30T09:20:00.000000Z",
            },
            {
                "id": 23,
                "result": [
                    {
                        "original_width": 200,
                        "original_height": 120,
                        "image_rotation": 0,
                        "value": {
                            "x": 60,
                            "y": 10,
                            "width": 10,
                            "height": 20,
                            "rotation": 90,
                            "rectanglelabels": ["crack"],
                        },
                        "id": "new",
                        "from_name": "label",
                        "to_name": "image",
                        "type": "rectanglelabels",
                    }
                ],
                "was_cancelled": False,
                "updated_at": "2026-11-30T10:00:00.000000Z",
            },
        ],
        "predictions": [],
        "data": {"image": "/data/local-files/?d=line1%2Fbatch%2Fpart_02.png"},
    },
    {  # submitted with no box: a defect-free part
        "id": 13,
        "annotations": [{"id": 24, "result": [], "was_cancelled": False}],
        "data": {"image": "/data/upload/3/1b2c3d4e-part_03.jpg"},
    },
    {  # skipped by the labeller, and a task nobody labelled (predictions only): both left out
        "id": 14,
        "annotations": [{"id": 25, "result": [], "was_cancelled": True}],
        "data": {"image": "/data/upload/3/aaaaaaaa-part_04.jpg"},
    },
    {
        "id": 15,
        "annotations": [],
        "predictions": [{"model_version": "v1", "score": 0.5, "result": []}],
        "data": {"image": "/data/upload/3/bbbbbbbb-part_05.jpg"},
    },
]

# What CVAT writes for "Export task dataset > CVAT for images 1.1" (annotations.xml).
CVAT_EXPORT = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>42</id>
      <name>line1 batch 7</name>
      <size>3</size>
      <mode>annotation</mode>
      <overlap>0</overlap>
      <bugtracker></bugtracker>
      <created>2026-11-30 09:00:00.000000+00:00</created>
      <updated>2026-11-30 10:00:00.000000+00:00</updated>
      <subset>default</subset>
      <start_frame>0</start_frame>
      <stop_frame>2</stop_frame>
      <frame_filter></frame_filter>
      <segments>
        <segment>
          <id>61</id>
          <start>0</start>
          <stop>2</stop>
          <url>http://cvat.local/api/jobs/61</url>
        </segment>
      </segments>
      <owner>
        <username>qa</username>
        <email>qa@example.com</email>
      </owner>
      <assignee></assignee>
      <labels>
        <label>
          <name>scratch</name>
          <color>#fa3253</color>
          <type>rectangle</type>
          <attributes>
          </attributes>
        </label>
        <label>
          <name>pit</name>
          <color>#33ddff</color>
          <type>any</type>
          <attributes>
            <attribute>
              <name>depth</name>
              <mutable>False</mutable>
              <input_type>select</input_type>
              <default_value>shallow</default_value>
              <values>shallow
deep</values>
            </attribute>
          </attributes>
        </label>
      </labels>
    </task>
    <dumped>2026-11-30 10:05:00.000000+00:00</dumped>
  </meta>
  <image id="0" name="part_01.jpg" width="200" height="120">
    <box label="scratch" source="manual" occluded="0" xtl="20.00" ytl="30.00" xbr="60.00" ybr="90.00" z_order="0">
    </box>
    <box label="pit" source="manual" occluded="1" xtl="100.50" ytl="10.25" xbr="110.50" ybr="20.25" rotation="90.0" z_order="0">
      <attribute name="depth">deep</attribute>
    </box>
  </image>
  <image id="1" name="sub/part_02.png" width="200" height="120">
    <polygon label="scratch" source="manual" occluded="0" points="1.0,1.0;10.0,1.0;10.0,10.0" z_order="0">
    </polygon>
  </image>
  <image id="2" name="part_03.jpg" width="200" height="120">
  </image>
</annotations>
"""


def _boxes_px(image: Path) -> list[tuple[str, float, float, float, float]]:
    h, w = cv2.imread(str(image)).shape[:2]
    lab = read_labels(image)
    out = []
    for c, (cx, cy, bw, bh) in zip(lab.class_ids, lab.boxes_norm):
        out.append((CLASSES[c], (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
    return out


def test_import_label_studio_export(tmp_path: Path) -> None:
    src = tmp_path / "ls"
    _images(src / "files", ["part_01.jpg", "part_02.png", "part_03.jpg", "part_04.jpg", "part_05.jpg"])
    (src / "project-3-at-2026-11-30.json").write_text(json.dumps(LABEL_STUDIO_EXPORT))
    report = import_dataset(src, tmp_path / "data", fmt="label-studio", classes=list(CLASSES))
    assert report.images_imported == 3 and report.boxes_imported == 2
    problems = {i.problem for i in report.issues}
    assert {"not_labelled", "several_annotations", "rotated_box"} <= problems
    img = tmp_path / "data" / "images"
    assert _boxes_px(img / "part_01.jpg") == [pytest.approx(("scratch", 20, 30, 60, 90), abs=0.01)]
    # rotated 90 deg about its top-left corner (120, 12): w 20 px, h 24 px -> envelope x 96..120, y 12..32
    assert _boxes_px(img / "part_02.png") == [pytest.approx(("crack", 96, 12, 120, 32), abs=0.01)]
    assert _boxes_px(img / "part_03.jpg") == []  # defect-free
    assert not (img / "part_04.jpg").exists() and not (img / "part_05.jpg").exists()


def test_import_cvat_export(tmp_path: Path) -> None:
    src = tmp_path / "cvat"
    _images(src / "images", ["part_01.jpg", "part_03.jpg"])
    _images(src / "images" / "sub", ["part_02.png"])
    (src / "annotations.xml").write_text(CVAT_EXPORT)
    report = import_dataset(src, tmp_path / "data", fmt="cvat", images_dir=src / "images")
    assert report.classes == ["scratch", "pit"]  # the task's label order
    assert report.images_imported == 3 and report.boxes_imported == 2
    assert {i.problem for i in report.issues} >= {"unsupported_shape", "rotated_box"}
    boxes = _boxes_px(tmp_path / "data" / "images" / "part_01.jpg")
    assert boxes[0] == pytest.approx(("scratch", 20, 30, 60, 90), abs=0.01)
    assert boxes[1] == pytest.approx(("pit", 100.5, 10.25, 110.5, 20.25), abs=0.01)  # a square turned 90 deg
    assert _boxes_px(tmp_path / "data" / "images" / "part_02.png") == []


@pytest.mark.parametrize("fmt", ["label-studio", "cvat"])
def test_round_trip_dataset_tool_dataset(tmp_path: Path, fmt: str) -> None:
    from training.formats.batch import dataset_sources, write_batch

    data = write_dataset(tmp_path / "syn", n=10, size=(96, 128), seed=3, val_fraction=0.3, ok_probability=0.2)
    sources, classes = dataset_sources(data)
    tool_file = write_batch(sources, tmp_path / "batch", fmt, classes)
    if fmt == "cvat":
        root = ET.parse(tool_file).getroot()
        assert root.findtext("version") == "1.1" and root.find("meta/task/labels") is not None
        assert {b.get("source") for b in root.iter("box")} == {"manual"}
    else:
        tasks = json.loads(tool_file.read_text())
        region = tasks[0]["annotations"][0]["result"][0]
        assert region["type"] == "rectanglelabels" and region["to_name"] == "image"
        assert tasks[0]["data"]["image"].startswith("/data/local-files/?d=images/")
    back = import_dataset(tool_file, tmp_path / "back", fmt=fmt, images_dir=tmp_path / "batch" / "images")
    assert back.classes == list(CLASSES) and back.images_imported == 10
    for src in sources:
        again = tmp_path / "back" / "images" / src.image.name
        original = [(b.label, *b.xyxy) for b in src.labels or []]
        assert _boxes_px(again) == [pytest.approx(o, abs=0.02) for o in original]


@pytest.mark.skipif(not DEMO_ONNX.is_file(), reason="needs models/demo")
def test_export_a_folder_with_model_pre_annotations(tmp_path: Path) -> None:
    from edge_agent.cli import app

    runner = CliRunner()
    images = REPO / "images"
    res = runner.invoke(
        app,
        [
            "dataset",
            "export",
            str(images),
            str(tmp_path / "ls"),
            "--format",
            "label-studio",
            "--model",
            str(DEMO_ONNX),
        ],
    )
    assert res.exit_code == 0, res.output
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert len(tasks) == 8 and all("annotations" not in t for t in tasks)
    scored = [r for t in tasks for p in t.get("predictions", []) for r in p["result"]]
    assert scored and all(0 < r["score"] <= 1 and r["value"]["rectanglelabels"][0] in CLASSES for r in scored)
    res = runner.invoke(
        app,
        [
            "dataset",
            "export",
            str(images),
            str(tmp_path / "cvat"),
            "--format",
            "cvat",
            "--model",
            str(DEMO_ONNX),
        ],
    )
    assert res.exit_code == 0, res.output
    boxes = list(ET.parse(tmp_path / "cvat" / "annotations.xml").getroot().iter("box"))
    assert len(boxes) == len(scored) and {b.get("source") for b in boxes} == {"auto"}
    res = runner.invoke(app, ["dataset", "export", str(images), str(tmp_path / "none"), "--format", "cvat"])
    assert res.exit_code == 2 and "needs --model" in res.output
