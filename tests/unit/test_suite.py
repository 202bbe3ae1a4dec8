"""Suite loading: the embedded default, other dataset formats, column mappings, bad images."""

import io
import subprocess
import sys

import pytest
from PIL import Image

from harness.client import build_request
from harness.config import SUITES_DIR, Sampling, load_suite_spec
from harness.errors import SuiteError
from harness.suite import load_suite


def test_default_suite_has_seven_tasks_and_rebuilds_byte_for_byte(tmp_path):
    suite = load_suite(load_suite_spec("default"))
    assert len(suite.items) >= 120 and len(suite.task_counts()) >= 5
    assert all(i.image_mime == "image/png" and i.references for i in suite.items)
    out = tmp_path / "rebuilt.parquet"
    subprocess.run([sys.executable, str(SUITES_DIR / "default" / "build.py"), str(out)], check=True)
    assert out.read_bytes() == (SUITES_DIR / "default" / "data.parquet").read_bytes()


def write_suite(tmp_path, images: dict[str, bytes], fmt="disk", extra_yaml="", columns=None, refs=None):
    import datasets

    ds = datasets.Dataset.from_dict({
        "qid": list(images), "img": [{"bytes": b, "path": None} for b in images.values()],
        "q": ["What is shown?"] * len(images), "ans": refs if refs is not None else [["x"]] * len(images),
    }, features=datasets.Features({"qid": datasets.Value("string"), "img": datasets.Image(),
                                   "q": datasets.Value("string"), "ans": datasets.Sequence(datasets.Value("string"))}))
    if fmt == "disk":
        ds.save_to_disk(str(tmp_path / "data"))
        data = "data:\n  format: disk\n  path: data\n"
    else:
        ds.to_parquet(str(tmp_path / "data.parquet"))
        data = "data:\n  format: parquet\n  path: data.parquet\n"
    cols = columns or "columns: {id: qid, image: img, prompt: q, references: ans}\n"
    (tmp_path / "suite.yaml").write_text(f"name: t\n{data}{cols}metric: exact_match\n{extra_yaml}")
    return load_suite_spec(str(tmp_path / "suite.yaml"))


def image_bytes(fmt: str, size=(8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "red").save(out, format=fmt)
    return out.getvalue()


def truncated_png() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((64, 64), 80).convert("RGB").save(out, format="PNG")
    return out.getvalue()[: len(out.getvalue()) // 2]


def test_save_to_disk_suite_sends_png_as_is_and_converts_bmp_once(tmp_path):
    png, bmp = image_bytes("PNG"), image_bytes("BMP")
    suite = load_suite(write_suite(tmp_path, {"a": png, "b": bmp}))
    a, b = suite.items
    assert a.image_bytes == png and a.converted_from is None
    assert b.image_mime == "image/png" and b.converted_from == "BMP"


def test_missing_column_is_named(tmp_path):
    spec = write_suite(tmp_path, {"a": image_bytes("PNG")}, fmt="parquet",
                       columns="columns: {id: qid, image: picture, prompt: q, references: ans}\n")
    with pytest.raises(SuiteError, match="'picture' is not a column"):
        load_suite(spec)


@pytest.mark.parametrize("payload, message", [
    (b"not an image at all", "cannot be decoded"),
    (truncated_png(), "cannot be decoded"),
])
def test_corrupt_and_truncated_images_are_refused(tmp_path, payload, message):
    with pytest.raises(SuiteError, match=message):
        load_suite(write_suite(tmp_path, {"bad": payload}, fmt="parquet"))


def test_enormous_image_is_refused_before_sending(tmp_path):
    spec = write_suite(tmp_path, {"big": image_bytes("PNG", (400, 400))}, fmt="parquet",
                       extra_yaml="max_image_pixels: 10000\n")
    with pytest.raises(SuiteError, match="over the suite's limit"):
        load_suite(spec)


def test_suite_paths_cannot_escape_the_suite_folder(tmp_path):
    (tmp_path / "suite.yaml").write_text("data: {format: parquet, path: ../../etc/passwd}\n"
                                         "columns: {id: a, image: b, prompt: c}\n")
    with pytest.raises(SuiteError, match="escapes the suite folder"):
        load_suite(load_suite_spec(str(tmp_path / "suite.yaml")))


def test_request_puts_the_image_first_as_original_bytes_with_competition_sampling():
    item = load_suite(load_suite_spec("default"), limit=1).items[0]
    req = build_request(item, "m", Sampling(), max_tokens=32, seed=7)
    image, text = req["messages"][0]["content"]
    assert image["type"] == "image_url" and text == {"type": "text", "text": item.prompt}
    import base64
    assert base64.b64decode(image["image_url"]["url"].split(",", 1)[1]) == item.image_bytes
    assert (req["temperature"], req["top_p"], req["extra_body"]["top_k"]) == (1.0, 0.95, 64)
    assert req["stream"] and req["stream_options"] == {"include_usage": True} and req["seed"] == 7


def test_item_without_reference_is_refused_when_the_metric_needs_one(tmp_path):
    spec = write_suite(tmp_path, {"a": image_bytes("PNG")}, fmt="parquet", refs=[[]])
    with pytest.raises(SuiteError, match="no reference answer, but metric 'exact_match' needs one"):
        load_suite(spec)
