"""Lines with an anomaly model (issue 29): alone, or beside a detector on the same camera. Real ONNX
Runtime on a real anomaly model file (tests.anomaly_factory), real folder sources, the real journal,
archive and ZeroMQ publisher."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from agent_helpers import folder_line, wait_until, write_site, write_yaml
from typer.testing import CliRunner

from contract.zmq_wire import decode
from edge_agent.anomaly_reviews import reviewed_images
from edge_agent.archive import annotated_file, archived_image, draw_annotated
from edge_agent.cli import app
from edge_agent.config import LineConfig, load_line
from edge_agent.inspector import Inspector, InspectorLoadError, validate_line_model
from edge_agent.sources.base import Frame
from tests.anomaly_factory import (
    DEFECT_BOX,
    build_mean_image_model,
    defect_part,
    good_part,
    part_surface,
    write_parts,
)
from vision.postprocess import box_iou

pytest.importorskip("onnx")

REPO = Path(__file__).resolve().parents[2]
DETECTOR = REPO / "models" / "demo" / "model.onnx"
ZMQ_FREE_PORTS = {
    "type": "zmq",
    "pub_endpoint": "tcp://127.0.0.1:*",
    "router_endpoint": None,
    "security": "plain",
}


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    rng = np.random.default_rng(21)
    base = part_surface()
    root = tmp_path_factory.mktemp("anomaly-parts")
    good = [good_part(rng, base) for _ in range(3)]
    defect = [defect_part(rng, base) for _ in range(3)]
    model = build_mean_image_model(root / "anomaly" / "model.onnx", [good_part(rng, base) for _ in range(12)])
    files = write_parts(root / "good", good, "a_good") + write_parts(root / "defect", defect, "b_defect")
    return {"good": good, "defect": defect, "model": model, "files": files}


def drop_in(src: Path, folder: Path) -> None:
    staging = folder.parent / "staging"
    staging.mkdir(exist_ok=True)
    shutil.copy(src, staging / src.name)
    os.replace(staging / src.name, folder / src.name)


def test_anomaly_line_journals_publishes_and_archives(tmp_path: Path, parts, agent_factory) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    camera = {
        "name": "top",
        "source": {"type": "folder", "path": str(incoming), "mode": "watch", "poll_s": 0.02, "settle_s": 0},
    }
    line = folder_line("anomaly", incoming, parts["model"], cameras=[camera])
    line["model"] = {"path": str(parts["model"]), "threads": 1}
    line["recipes"] = {"default": {}}
    site = write_site(tmp_path, [line], [ZMQ_FREE_PORTS])
    agent = agent_factory(site)
    agent.start()
    publisher = agent.publishers[0]
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.RCVTIMEO, 10_000)
    sub.connect(publisher.pub_endpoint)
    sub.subscribe(b"insp.v1/test-site/anomaly/result")
    wait_until(lambda: publisher.stats()["subscriptions"] >= 1)
    for image in parts["files"]:
        drop_in(image, incoming)
    try:
        received = [decode(sub.recv_multipart()).result() for _ in parts["files"]]
    finally:
        sub.close(linger=0)

    journaled = agent.journal.since(0)
    assert [r.model_dump() for r in received] == [r.model_dump() for r in journaled]
    assert [r.verdict for r in journaled] == ["OK"] * 3 + ["NG"] * 3
    model_name = "anomaly"  # models/<name>/model.onnx: the folder names the model
    for result in journaled:
        (score,) = result.anomaly
        assert score.camera == "top" and score.model.name == model_name and score.model.sha256
        assert score.anomalous == (result.verdict == "NG")
        assert result.model.name == model_name
    for result in journaled[3:]:
        score = result.anomaly[0]
        said = re.fullmatch(r"anomaly score ([\d.]+) ≥ ([\d.]+)", result.reasons[0])
        assert said is not None, result.reasons
        assert float(said[1]) == pytest.approx(score.score, rel=0.01)
        assert float(said[2]) == pytest.approx(score.image_threshold, rel=0.01)
        assert "anomaly: 1 found, at most 0 allowed" in result.reasons
        (region,) = [d for d in result.defects if d.class_name == "anomaly"]
        assert box_iou(np.array(DEFECT_BOX, np.float32), np.array([region.xyxy], np.float32))[0] > 0.5
        assert region.counts_for_verdict and region.confidence >= score.pixel_threshold
        assert region.area_px < (region.xyxy[2] - region.xyxy[0]) * (region.xyxy[3] - region.xyxy[1]) * 1.01
    assert all(not r.defects and not r.reasons for r in journaled[:3])

    # the archive keeps each NG part's image and its anomaly map; the heat is drawn from them again
    archive = tmp_path / "data" / "archive"
    ng = journaled[3]
    raw = wait_until(lambda: archived_image(archive, ng, "top"))
    kept = wait_until(lambda: archived_image(archive, ng, "top", anomaly_map=True))
    assert kept.name.endswith("_top_anomaly.png")
    encoded = cv2.imread(str(kept), cv2.IMREAD_GRAYSCALE)
    x1, y1, x2, y2 = DEFECT_BOX
    assert encoded[y1:y2, x1:x2].mean() > 128 > encoded[:20].max()  # 127.5 = the pixel threshold
    drawn = draw_annotated(raw, ng, "top")
    plain = cv2.imread(str(raw))
    assert drawn is not None and drawn.shape == plain.shape
    # red heat where the scratch is: the defect's pixels are redder than in the raw image
    assert drawn[y1:y2, x1:x2, 2].mean() > plain[y1:y2, x1:x2, 2].mean() + 40
    assert archived_image(archive, journaled[0], "top") is None  # OK parts are not archived here
    # the hub's pulled image (`annotated_file`) is the same drawing
    data, name = annotated_file(archive, ng, "top")
    pulled = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert name.endswith("_annotated.jpg")
    assert pulled[y1:y2, x1:x2, 2].mean() > plain[y1:y2, x1:x2, 2].mean() + 40

    # reviews: a false reject goes back as a good image, a confirmed NG as an NG image
    journal = agent.journal
    region = next(d for d in journaled[4].defects if d.class_name == "anomaly")
    box = {"camera": "top", "class": "anomaly", "class_id": 0, "xyxy": region.xyxy}
    journal.add_review(journaled[3].seq, "false_reject", [], reviewer="qe")
    journal.add_review(journaled[4].seq, "confirmed_ng", [box], reviewer="qe")
    journal.add_review(journaled[0].seq, "confirmed_ok", [], reviewer="qe")  # OK parts: not archived
    found = reviewed_images(journal.path, archive, line="anomaly")
    assert [(i.seq, i.decision) for i in found.good] == [(journaled[3].seq, "false_reject")]
    assert [(i.seq, i.decision, len(i.boxes)) for i in found.ng] == [(journaled[4].seq, "confirmed_ng", 1)]
    assert found.good[0].path == raw and found.good[0].anomaly_score == journaled[3].anomaly[0].score
    assert found.missing == [f"#{journaled[0].seq}/top: no archived image"]
    dst = tmp_path / "reviewed"
    out = CliRunner().invoke(
        app, ["dataset", "anomaly-from-reviews", str(dst), "--line", "anomaly", "--config", str(site)]
    )
    assert out.exit_code == 0, out.output
    assert "1 good, 1 NG" in out.output
    assert [p.name for p in (dst / "good").iterdir()] == [f"anomaly_{journaled[3].seq:010d}_top{raw.suffix}"]
    assert len(list((dst / "ng").iterdir())) == 1
    records = [json.loads(x) for x in (dst / "reviews.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in records] == ["false_reject", "confirmed_ng"]


def _line_config(tmp_path: Path, **changes) -> LineConfig:
    line = folder_line("side", tmp_path, DETECTOR)
    line["model"] = {"path": str(DETECTOR), "threads": 1, "conf": 0.25}
    line["recipes"] = {"default": {}}
    line.update(changes)
    return load_line(write_yaml(tmp_path / "side.yaml", line)).config


def _frames(image: np.ndarray) -> dict[str, Frame]:
    return {"top": Frame(image=image, camera="top", source_ref="test", index=0)}


def test_anomaly_model_beside_a_detector(tmp_path: Path, parts) -> None:
    config = _line_config(tmp_path, anomaly={"path": str(parts["model"]), "threads": 1})
    inspector = Inspector.load(config, site="s")
    detector_classes = len(inspector.model.names)
    assert inspector.names[detector_classes] == "anomaly" and inspector.model.task == "detect"
    assert inspector.decode_fit is None  # the map stays at the image's size
    good = inspector.inspect(_frames(parts["good"][0]), "default", part_id="g").result
    assert good.anomaly[0].model.name == "anomaly" and good.model.name == "demo"
    assert not any(r.startswith("anomaly") for r in good.reasons)
    outcome = inspector.inspect(_frames(parts["defect"][0]), "default", part_id="d")
    bad = outcome.result
    assert bad.verdict == "NG" and bad.reasons[0].startswith("anomaly score ")
    assert "anomaly: 1 found, at most 0 allowed" in bad.reasons
    regions = [d for d in bad.defects if d.class_name == "anomaly"]
    assert len(regions) == 1 and regions[0].class_id == detector_classes
    # the detector's own findings keep their classes and box areas
    for d in bad.defects:
        if d.class_name != "anomaly":
            assert d.class_id < detector_classes
            assert d.area_px == pytest.approx((d.xyxy[2] - d.xyxy[0]) * (d.xyxy[3] - d.xyxy[1]), rel=1e-3)
    assert "anomaly" in bad.timings_ms and outcome.anomaly["top"].map.shape == parts["defect"][0].shape[:2]


def test_recipe_rules_judge_regions_roi_and_count(tmp_path: Path, parts) -> None:
    """An ROI that leaves the scratch out: the region does not count; with `judge_image_score: false` the
    image score alone no longer rejects, so the part is OK; a `max_count` of 1 allows one region."""
    x1, _, x2, _ = DEFECT_BOX
    out = [[0, 0], [30, 0], [30, 20], [0, 20]]  # the top-left corner only
    recipes = {
        "roi": {"roi": {"include": [out]}},
        "one_allowed": {"classes": {"anomaly": {"max_count": 1}}},
        "big_only": {"classes": {"anomaly": {"min_size": (x2 - x1) * 2}}},
    }
    model = {"path": str(parts["model"]), "threads": 1, "judge_image_score": False}
    config = _line_config(tmp_path, model=model, recipes=recipes)
    inspector = Inspector.load(config, site="s")
    for recipe in recipes:
        result = inspector.inspect(_frames(parts["defect"][1]), recipe, part_id="d").result
        assert result.verdict == "OK", (recipe, result.reasons)
        assert result.anomaly[0].anomalous  # the score is still above its threshold, and journaled
        assert [d.counts_for_verdict for d in result.defects] == [False] if recipe != "one_allowed" else True
    # the same part with the image score judged: NG by the score, the region reason left out by the ROI
    config = _line_config(tmp_path, model={**model, "judge_image_score": True}, recipes=recipes)
    result = Inspector.load(config, site="s").inspect(_frames(parts["defect"][1]), "roi", part_id="d").result
    assert result.verdict == "NG" and len(result.reasons) == 1
    assert result.reasons[0].startswith("anomaly score")


def test_thresholds_from_the_line_override_the_model(tmp_path: Path, parts) -> None:
    model = {"path": str(parts["model"]), "threads": 1, "image_threshold": 5.0, "pixel_threshold": 5.0}
    inspector = Inspector.load(_line_config(tmp_path, model=model), site="s")
    result = inspector.inspect(_frames(parts["defect"][0]), "default", part_id="d").result
    assert result.verdict == "OK" and result.anomaly[0].image_threshold == 5.0 and not result.defects


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"anomaly": {"path": str(DETECTOR)}}, ("anomaly", "path"), "needs outputs 'pred_score'"),
        ({"model": {"path": str(DETECTOR), "image_threshold": 0.5}}, ("model", "image_threshold"),
         "anomaly models only"),
        ({"model": {"path": "ANOMALY", "tile": [2, 2]}}, ("model", "tile"), "cannot be tiled"),
        ({"model": {"path": "ANOMALY"}, "anomaly": {"path": "ANOMALY"}}, ("anomaly",), "already"),
        ({"recipes": {"default": {"classes": {"anomal": {"max_count": 1}}}}, "model": {"path": "ANOMALY"}},
         ("recipes",), "did you mean 'anomaly'"),
    ],
)
def test_wrong_anomaly_settings_name_the_key(tmp_path: Path, parts, changes, key, message) -> None:
    for section in changes.values():
        if isinstance(section, dict) and section.get("path") == "ANOMALY":
            section["path"] = str(parts["model"])
    with pytest.raises(InspectorLoadError) as exc:
        Inspector.load(_line_config(tmp_path, **changes), site="s")
    assert exc.value.key == key and message in str(exc.value)


def test_config_check_points_at_the_anomaly_section(tmp_path: Path, parts) -> None:
    line = folder_line("side", tmp_path, DETECTOR)
    line["anomaly"] = {"path": str(DETECTOR)}
    loaded = load_line(write_yaml(tmp_path / "side.yaml", line))
    (issue,) = validate_line_model(loaded)
    text = (tmp_path / "side.yaml").read_text().splitlines()
    assert "needs outputs 'pred_score'" in issue.message
    assert text[issue.line - 1].strip().startswith("path:") and text[issue.line - 2] == "anomaly:"
    line["anomaly"] = {"path": str(parts["model"]), "image_treshold": 0.5}
    with pytest.raises(Exception, match="image_treshold") as exc:
        load_line(write_yaml(tmp_path / "side.yaml", line))
    assert "side.yaml" in str(exc.value) and "image_threshold" in str(exc.value)  # the suggestion


def test_setup_what_if_judges_as_the_anomaly_line(tmp_path: Path, parts) -> None:
    """The console's what-if of a recipe change: regions judged without the default min_confidence, and
    parts the image score rejects stay NG whatever the region rules say."""
    from edge_agent.console.setup import what_if
    from edge_agent.inspector import with_anomaly_rule
    from vision.rules import RecipeRules

    inspector = Inspector.load(_line_config(tmp_path, model={"path": str(parts["model"]), "threads": 1}), "s")
    results = [
        inspector.inspect(_frames(image), "default", part_id=str(i)).result
        for i, image in enumerate(parts["good"][:1] + parts["defect"][:2])
    ]
    for r, seq in zip(results, (1, 2, 3), strict=True):
        r.seq = seq
    assert [r.verdict for r in results] == ["OK", "NG", "NG"]
    roi_out = with_anomaly_rule(RecipeRules(roi={"include": [[[0, 0], [30, 0], [30, 20], [0, 20]]]}))
    judged = what_if(results, roi_out, inspector.names, 0.25, image_score_judged=True)
    assert (judged["ok_to_ng"], judged["ng_to_ok"], judged["notes"]) == (0, 0, [])
    regions_only = what_if(results, roi_out, inspector.names, 0.25, image_score_judged=False)
    assert regions_only["ng_to_ok"] == 2
    same = what_if(results, with_anomaly_rule(RecipeRules()), inspector.names, 0.25)
    assert (same["ok_to_ng"], same["ng_to_ok"]) == (0, 0)  # the line's own recipe: nothing changes


def test_a_retrained_anomaly_model_beside_the_detector_is_hot_reloaded(
    tmp_path: Path, parts, agent_factory
) -> None:
    anomaly = tmp_path / "models" / "tiles" / "model.onnx"
    anomaly.parent.mkdir(parents=True)
    shutil.copy(parts["model"], anomaly)
    trigger = {"type": "free_run", "max_fps": 20}
    line = folder_line("side", parts["files"][0].parent, DETECTOR, trigger=trigger)
    line["cameras"][0]["source"]["mode"] = "loop"
    line["anomaly"] = {"path": str(anomaly), "threads": 1}
    site = write_site(tmp_path, [line], reload={"enabled": True, "poll_s": 0.05})
    events: list[str] = []
    agent = agent_factory(site, on_event=lambda ln, event, payload: events.append(event))
    agent.start()
    wait_until(lambda: agent.journal.last_seq() >= 1)
    assert agent.journal.since(0)[0].anomaly[0].model.version == "1"
    rng = np.random.default_rng(9)
    retrained = [good_part(rng, part_surface()) for _ in range(12)]
    build_mean_image_model(tmp_path / "new" / "model.onnx", retrained, version="2")
    os.replace(tmp_path / "new" / "model.onnx", anomaly)
    wait_until(lambda: "reloaded" in events)
    seq = agent.journal.last_seq()
    wait_until(lambda: any(r.anomaly[0].model.version == "2" for r in agent.journal.since(seq)))


def test_two_cameras_one_verdict_each_score_named(tmp_path: Path, parts) -> None:
    config = _line_config(tmp_path, model={"path": str(parts["model"]), "threads": 1})
    config = config.model_copy(
        update={"cameras": [config.cameras[0], config.cameras[0].model_copy(update={"name": "side"})]}
    )
    inspector = Inspector.load(config, site="s")
    frames = {
        "top": Frame(image=parts["good"][0], camera="top", source_ref="a", index=0),
        "side": Frame(image=parts["defect"][0], camera="side", source_ref="b", index=0),
    }
    result = inspector.inspect(frames, "default", part_id="two").result  # one batch of two frames
    assert result.verdict == "NG" and [a.camera for a in result.anomaly] == ["top", "side"]
    assert [a.anomalous for a in result.anomaly] == [False, True]
    assert result.reasons[0].startswith("side: anomaly score ")
    assert {d.camera for d in result.defects} == {"side"}
