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


def write_rows(tmp_path, rows: list[dict], yaml_extra: str = "") -> str:
    """A parquet suite written with plain pyarrow (no Hugging Face features), as users make them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet")
    (tmp_path / "suite.yaml").write_text("name: t\ndata: {format: parquet, path: data.parquet}\n"
                                         "columns: {id: id, image: image, prompt: q, references: ans}\n"
                                         f"metric: exact_match\n{yaml_extra}")
    return str(tmp_path / "suite.yaml")


@pytest.mark.parametrize("image, message", [
    ({"bytes": None, "path": "img/missing.png"}, r"image file .*missing.png cannot be read \(No such file"),
    ({"bytes": None, "path": "img"}, "image path .*img is a directory"),
])
def test_missing_or_directory_image_paths_give_one_line(tmp_path, image, message):
    (tmp_path / "img").mkdir()
    source = write_rows(tmp_path, [{"id": "a", "image": image, "q": "What?", "ans": ["x"]}])
    with pytest.raises(SuiteError, match=message):
        load_suite(load_suite_spec(source))
    result = subprocess.run([sys.executable, "-m", "harness.cli", "suites", "--suite", source], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_numeric_answers_and_questions_are_text(tmp_path):
    png = {"bytes": image_bytes("PNG"), "path": None}
    source = write_rows(tmp_path, [{"id": 1, "image": png, "q": 42, "ans": [3.0, 2.5]}])
    item = load_suite(load_suite_spec(source)).items[0]
    assert item.id == "1" and item.prompt == "42" and item.references == ("3", "2.5")


def test_braces_in_templates_and_questions_are_sent_as_they_are(tmp_path):
    png = {"bytes": image_bytes("PNG"), "path": None}
    source = write_rows(tmp_path, [{"id": "a", "image": png, "q": "Is {x} = {0}?", "ans": ["yes"]}],
                        'prompt_template: "Q {json: 1} {prompt} }{"\nprompt: {post: " {answer}"}\n')
    assert load_suite(load_suite_spec(source)).items[0].prompt == "Q {json: 1} Is {x} = {0}? }{ {answer}"


@pytest.mark.parametrize("row, message", [
    ({"q": None, "ans": ["x"]}, "question column 'q' is null"),
    ({"q": "What?", "ans": None}, "no reference answer"),
    ({"q": "What?", "ans": [None]}, "no reference answer"),
])
def test_null_question_or_answer_is_refused_not_sent_as_none(tmp_path, row, message):
    png = {"bytes": image_bytes("PNG"), "path": None}
    source = write_rows(tmp_path, [{"id": "a", "image": png, **row}])
    with pytest.raises(SuiteError, match=message):
        load_suite(load_suite_spec(source))


def test_thinking_suite_sends_the_think_token_as_a_system_message(tmp_path):
    png = {"bytes": image_bytes("PNG"), "path": None}
    plain = load_suite(load_suite_spec(write_rows(tmp_path, [{"id": "a", "image": png, "q": "Q", "ans": ["x"]}])))
    thinking = load_suite(load_suite_spec(write_rows(tmp_path, [{"id": "a", "image": png, "q": "Q", "ans": ["x"]}],
                                                     "thinking: true\n")))
    request = build_request(thinking.items[0], "m", Sampling(), max_tokens=8, seed=None)
    assert request["messages"][0] == {"role": "system", "content": "<|think|>"}
    assert request["messages"][1]["role"] == "user" and request["extra_body"]["skip_special_tokens"] is False
    plain_request = build_request(plain.items[0], "m", Sampling(), 8, None)
    assert plain_request["messages"][0]["role"] == "user" and "skip_special_tokens" not in plain_request["extra_body"]
    assert plain.content_hash != thinking.content_hash  # a thinking run is not the same suite
