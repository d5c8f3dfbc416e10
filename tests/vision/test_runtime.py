"""The vision runtime on real ONNX models: bad input, conversions, batching, tiling, providers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision import Detections, ImageError, Model, ModelLoadError, read_image
from vision.images import dct_reduction, jpeg_header, read_image_file, to_bgr8
from vision.preprocess import letterbox, letterbox_shape, letterbox_tensor
from vision.tiling import tile_windows

CONF = 1e-4


@pytest.fixture(scope="module")
def model(tiny_detect_onnx: Path) -> Model:
    return Model(tiny_detect_onnx, conf=CONF)


@pytest.fixture(scope="module")
def part(synthetic_images: Path) -> np.ndarray:
    return read_image(sorted(synthetic_images.iterdir())[0])


# -- bad input -------------------------------------------------------------------------------------
def test_missing_model_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match=r"nope\.onnx: no such model file"):
        Model(tmp_path / "nope.onnx")


def test_truncated_model_is_rejected(tmp_path, tiny_detect_onnx):
    broken = tmp_path / "truncated.onnx"
    broken.write_bytes(tiny_detect_onnx.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match=r"truncated\.onnx: not a loadable ONNX model"):
        Model(broken)


def test_non_onnx_file_is_rejected(tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_text("this is not a model")
    with pytest.raises(ModelLoadError, match=r"model\.onnx"):
        Model(fake)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.png", None, "no such image file"),
        ("empty.png", b"", "file is empty"),
        ("notes.png", b"just some text, not pixels", "not a readable image"),
    ],
)
def test_bad_image_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=f"{name}: {message}"):
        read_image(path)


def test_one_pixel_image_is_rejected(tmp_path):
    path = tmp_path / "dot.png"
    cv2.imwrite(str(path), np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match=r"dot\.png: image is 1x1 px"):
        read_image(path)


def test_empty_array_is_rejected(model):
    with pytest.raises(ImageError, match="empty image"):
        model.predict(np.zeros((0, 0, 3), np.uint8))


# -- metadata ------------------------------------------------------------------------------------
def test_metadata_is_read(model):
    assert model.task == "detect"
    assert model.names == {0: "scratch", 1: "pit", 2: "crack", 3: "stain"}
    assert model.imgsz == (64, 64)
    assert model.dynamic_batch
    assert len(model.sha256) == 64
    assert model.providers[-1] == "CPUExecutionProvider"


def test_model_without_metadata(tmp_path, tiny_detect_onnx, part):
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(tiny_detect_onnx))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ModelLoadError, match="no input size in its metadata"):
        Model(bare)
    with pytest.raises(ModelLoadError, match="no class names in its metadata"):
        Model(bare, imgsz=64)
    given = Model(bare, imgsz=64, names=["scratch", "pit", "crack", "stain"], conf=CONF)
    assert given.task == "detect" and not given.end2end
    reference = Model(tiny_detect_onnx, conf=CONF).predict(part).detections
    ours = given.predict(part).detections
    np.testing.assert_allclose(ours.xyxy, reference.xyxy, atol=1e-3)


def test_unknown_provider_is_a_clear_error(tiny_detect_onnx):
    with pytest.raises(ModelLoadError, match="'nonesuch' is not installed"):
        Model(tiny_detect_onnx, providers=["nonesuch"])


def test_cpu_provider_by_alias(tiny_detect_onnx):
    assert Model(tiny_detect_onnx, providers="cpu").providers == ["CPUExecutionProvider"]


# -- conversions ---------------------------------------------------------------------------------
def _same(a: Detections, b: Detections) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)


def test_grey_rgba_and_16bit_inputs(model, part):
    grey = cv2.cvtColor(part, cv2.COLOR_BGR2GRAY)
    as_bgr = model.predict(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)).detections
    _same(model.predict(grey).detections, as_bgr)
    _same(model.predict(grey[..., None]).detections, as_bgr)
    bgra = cv2.cvtColor(part, cv2.COLOR_BGR2BGRA)
    _same(model.predict(bgra).detections, model.predict(part).detections)
    sixteen = part.astype(np.uint16) * 257  # full-range 16-bit: top byte is the 8-bit value
    _same(model.predict(sixteen).detections, model.predict(part).detections)


def test_rgb_flag_swaps_channels(part):
    rgb = cv2.cvtColor(part, cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(to_bgr8(rgb, rgb=True), part)


def test_read_16bit_png(tmp_path, part):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), cv2.cvtColor(part, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (*part.shape[:2], 3)


# -- geometry ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (100, 1000), (33, 47)])
def test_letterbox_round_trip(shape):
    image = np.zeros((*shape, 3), np.uint8)
    padded, lb = letterbox(image, (320, 320))
    assert padded.shape == (320, 320, 3)
    full = np.array([[lb.pad_x, lb.pad_y, 320 - lb.pad_x, 320 - lb.pad_y]], np.float32)
    back = lb.boxes_to_original(full)[0]
    assert back[0] == pytest.approx(0, abs=1) and back[1] == pytest.approx(0, abs=1)
    assert back[2] == pytest.approx(shape[1], abs=shape[1] / 160 + 1)
    assert back[3] == pytest.approx(shape[0], abs=shape[0] / 160 + 1)


@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (320, 320), (33, 47), (1000, 100)])
def test_one_pass_tensor_is_ultralytics_letterbox_over_255_bit_for_bit(shape):
    """The fused letterbox + /255 (a table lookup written into the tensor) gives exactly what Ultralytics
    feeds the model: the padded BGR image, RGB, CHW, float32 divided by 255."""
    rng = np.random.default_rng(sum(shape))
    images = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(2)]
    tensor, boxes = letterbox_tensor(images, (320, 320))
    for image, plane, lb in zip(images, tensor, boxes, strict=True):
        padded, expected_lb = letterbox(image, (320, 320))
        expected = padded[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        assert lb == expected_lb
        assert plane.dtype == np.float32 and np.array_equal(plane, expected)


def test_boxes_lie_inside_any_image(model):
    from training.synth import make_sample

    for size in ((50, 300), (300, 50), (77, 77)):
        img, _ = make_sample(np.random.default_rng(1), size)
        d = model.predict(img).detections
        assert (d.xyxy >= 0).all()
        assert (d.xyxy[:, [0, 2]] <= size[1]).all() and (d.xyxy[:, [1, 3]] <= size[0]).all()


# -- batching and tiling ------------------------------------------------------------------------
def test_batch_equals_one_by_one(model, synthetic_images):
    images = [read_image(p) for p in sorted(synthetic_images.iterdir())[:4]]
    batch = model.predict_batch(images)
    for img, pred in zip(images, batch):
        _same(pred.detections, model.predict(img).detections)
        assert set(pred.timing_ms) == {"preprocess", "inference", "postprocess"}


def test_batch_of_different_sizes(model, part):
    small = cv2.resize(part, (70, 50))
    preds = model.predict_batch([part, small])
    assert preds[0].shape == part.shape[:2] and preds[1].shape == (50, 70)


def test_tile_windows_cover_the_image():
    windows = tile_windows((1000, 1500), (2, 3), overlap=0.25)
    assert len(windows) == 6
    covered = np.zeros((1000, 1500), bool)
    for x1, y1, x2, y2 in windows:
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    with pytest.raises(ValueError, match="overlap"):
        tile_windows((10, 10), (2, 2), overlap=1.0)


def test_tiled_prediction_maps_boxes_to_the_full_image(model):
    from training.synth import make_sample

    big, _ = make_sample(np.random.default_rng(2), (256, 384))
    pred = model.predict(big, tile=(2, 3))
    d = pred.detections
    assert pred.shape == (256, 384)
    assert len(d) > 0
    assert (d.xyxy[:, [0, 2]] <= 384).all() and (d.xyxy[:, [1, 3]] <= 256).all()
    assert (d.xyxy[:, 0] >= 0).all() and (d.xyxy[:, 1] >= 0).all()
    # one tile == no tiling
    _same(model.predict(big, tile=(1, 1)).detections, model.predict(big).detections)


def test_detections_struct(model, part):
    d = model.predict(part).detections
    assert d.xyxy.dtype == np.float32 and d.xyxy.shape == (len(d), 4)
    records = d.to_records()
    assert all(set(r) == {"class", "class_id", "confidence", "xyxy"} for r in records)
    strong = d[d.confidence > 0.5]
    assert len(strong) == int((d.confidence > 0.5).sum())


def _with_exif(jpeg: bytes) -> bytes:
    """`jpeg` with an (empty, valid) EXIF APP1 segment after SOI, as cameras and phones write one."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x00" + b"\x00\x00\x00\x00"
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def test_the_file_is_kept_only_where_it_holds_the_inspected_pixels(tmp_path, part):
    def write(name: str, data: bytes) -> Path:
        (tmp_path / name).write_bytes(data)
        return tmp_path / name

    jpeg = cv2.imencode(".jpg", part)[1].tobytes()
    kept = {
        "colour.jpg": (jpeg, ".jpg"),
        "colour.png": (cv2.imencode(".png", part)[1].tobytes(), ".png"),
        "named-wrongly.png": (jpeg, ".jpg"),  # the format is read from the bytes, not the name
    }
    for name, (data, ext) in kept.items():
        image, file = read_image_file(write(name, data))
        assert file == (data, ext, part.shape[:2]), name
        np.testing.assert_array_equal(
            image, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        )
    converted = {
        "grey.jpg": cv2.imencode(".jpg", cv2.cvtColor(part, cv2.COLOR_BGR2GRAY))[1].tobytes(),
        "deep.png": cv2.imencode(".png", part.astype(np.uint16) * 257)[1].tobytes(),
        "alpha.png": cv2.imencode(".png", cv2.cvtColor(part, cv2.COLOR_BGR2BGRA))[1].tobytes(),
        "exif.jpg": _with_exif(jpeg),  # a viewer would turn it by its orientation tag
        "picture.bmp": cv2.imencode(".bmp", part)[1].tobytes(),
    }
    for name, data in converted.items():
        image, file = read_image_file(write(name, data))
        assert file is None and image.shape == part.shape and image.dtype == np.uint8, name


# -- JPEGs decoded to fit the model (a folder source's `scaled_decode`) ------------------------------------
def _big_part(h: int = 480, w: int = 640) -> np.ndarray:
    from training.synth import make_sample

    return make_sample(np.random.default_rng(5), (h, w), ok_probability=0.0)[0]


def test_jpeg_header_reads_the_frame_size_wherever_the_frame_header_sits():
    image = _big_part(120, 200)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    baseline = cv2.imencode(".jpg", image)[1].tobytes()
    assert jpeg_header(baseline) == (120, 200, 3)
    assert jpeg_header(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()) == (
        120, 200, 3
    )
    assert jpeg_header(cv2.imencode(".jpg", grey)[1].tobytes()) == (120, 200, 1)
    assert jpeg_header(_with_exif(baseline)) == (120, 200, 3)  # after an APP1 segment
    assert jpeg_header(cv2.imencode(".png", image)[1].tobytes()) is None
    assert jpeg_header(baseline[:20]) is None  # cut before its frame header
    assert jpeg_header(b"\xff\xd8\x00garbage") is None


def test_dct_reduction_never_leaves_the_model_to_enlarge_the_image():
    for h in (100, 479, 480, 481, 1080, 2048, 3000):
        for w in (100, 640, 641, 1920, 2448, 4000):
            for fit in ((320, 320), (640, 640), (384, 640)):
                f = dct_reduction((h, w), fit)
                assert f in (1, 2, 4, 8)
                reduced = (-(-h // f), -(-w // f))  # libjpeg rounds the scaled size up
                lb = letterbox_shape(reduced, fit)
                assert f == 1 or (lb.gain_x <= 1 and lb.gain_y <= 1), (h, w, fit, f)
                if f < 8:  # the next reduction would have left the model's resize enlarging
                    r = min(fit[0] / h, fit[1] / w)
                    assert 2 * f * r > 1, (h, w, fit, f)


def test_a_large_colour_jpeg_is_decoded_at_the_model_size_and_keeps_its_file(tmp_path):
    image = _big_part(480, 640)
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
    path = tmp_path / "part.jpg"
    path.write_bytes(data)
    small, file = read_image_file(path, fit=(320, 320))
    assert small.shape == (240, 320, 3) and small.dtype == np.uint8
    assert file is not None and file.data == data and file.ext == ".jpg" and file.shape == (480, 640)
    # the decoder's 2x2 scaling is close to the model's own shrinking of the full decode
    full, _ = read_image_file(path)
    shrunk = cv2.resize(full, (320, 240), interpolation=cv2.INTER_LINEAR)
    diff = np.abs(small.astype(int) - shrunk.astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99.9) <= 8
    # 4x smaller input: 1/4; an input not at least twice smaller: the full decode
    assert read_image_file(path, fit=(120, 160))[0].shape == (120, 160, 3)
    assert read_image_file(path, fit=(320, 416))[0].shape == (480, 640, 3)


def test_only_a_colour_jpeg_without_exif_is_decoded_smaller(tmp_path):
    image = _big_part(480, 640)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    full = {
        "grey.jpg": cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))[1].tobytes(),
        "exif.jpg": _with_exif(jpeg),  # the reduced decoders turn by orientation; the full one does not
        "part.png": cv2.imencode(".png", image)[1].tobytes(),  # PNG has no cheaper smaller decode
    }
    for name, data in full.items():
        (tmp_path / name).write_bytes(data)
        pixels, file = read_image_file(tmp_path / name, fit=(160, 160))
        assert pixels.shape == (480, 640, 3), name
        assert file is None or file.shape == (480, 640), name
    (tmp_path / "broken.jpg").write_bytes(jpeg[:600])
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        read_image_file(tmp_path / "broken.jpg", fit=(160, 160))


def test_a_frame_decoded_smaller_knows_its_file_size_and_gives_the_full_pixels(tmp_path):
    from edge_agent.sources.base import Frame

    image = _big_part(480, 640)
    path = tmp_path / "part.jpg"
    cv2.imwrite(str(path), image)
    small, file = read_image_file(path, fit=(320, 320))
    frame = Frame(small, "top", str(path), 1, file=file)
    assert frame.shape == (480, 640) and frame.scale == (2.0, 2.0)
    np.testing.assert_array_equal(frame.full_image(), read_image_file(path)[0])
    same = Frame(*read_image_file(path)[:1], "top", str(path), 2)
    assert same.shape == (480, 640) and same.scale is None and same.full_image() is same.image
