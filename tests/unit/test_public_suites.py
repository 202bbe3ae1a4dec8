"""The public suite definitions, loaded offline from schema-exact stand-ins through the Hub path."""

import io
import os
import subprocess
import sys

import pytest
from PIL import Image

from harness.config import list_suites, load_suite_spec
from harness.errors import ConfigError, SuiteError
from harness.images import prepare_image
from harness.scoring.metrics import score_answers
from harness.suite import load_suite, stratified_indices
from tests.public_suites import PUBLISHED, fixture_dataset, png, write_hub_cache


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline Hub cache that only the stand-ins are in."""
    monkeypatch.setenv("BENCH_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"


def test_at_least_eight_public_suites_are_defined_with_a_stand_in_each():
    names = {p.parent.name for p in list_suites()} - {"default", "docvqa_thinking"}
    assert len(names) >= 8 and names == set(PUBLISHED)
    for name in names:
        spec = load_suite_spec(name)
        assert spec.data_format == "hub" and spec.data_path == PUBLISHED[name][0] and "lmms-eval" in spec.origin


# name → (expected prompt of row 0, expected references of row 0, a right answer, a wrong answer)
EXPECTED = {
    "docvqa": ("What is the date {x} on form 0?\nAnswer the question using a single word or phrase.",
               ("10 May", "May 10"), "**10 May**", "June"),
    "infovqa": ("How many people 0?\nAnswer the question using a single word or phrase.", ("10",), "10.", "7"),
    "chartqa": ("Value of bar 0?\nAnswer the question with a single word.", ("30",), "30.5", "40"),
    "textvqa": ("What brand is shown 0?\nAnswer the question using a single word or phrase.",
                ("nokia",) * 8 + ("nokia phone", "lg"), "Nokia.", "samsung"),
    "ocrbench": ("what is written in the image? 0", ("WORD0",), "The text says word0", "nothing"),
    "vqav2": ("How many dogs 0?\nAnswer the question using a single word or phrase.", ("2",) * 7 + ("two",) * 3,
              "2", "3"),
    "ai2d": ("Which stage is shown 0?\nA. egg\nB. larva\nC. pupa\nD. adult\n"
             "Answer with the option's letter from the given choices directly.", ("A", "egg"), "(A)", "B"),
    "scienceqa_img": ("Context: Look at the picture.\nWhich animal is a mammal?\nA. shark\nB. whale\nC. trout\n"
                      "Answer with the option's letter from the given choices directly.", ("B", "whale"), "whale",
                      "A whale is a mammal"),
    "mmmu": ("<image 1> Which curve is the demand?\nA. D1\nB. S1\nC. D2\n\n"
             "Answer with the option's letter from the given choices directly.", ("A", "D1"), "**A**", "B"),
    "coco_cap": ("Provide a one-sentence caption for the provided image.", None, None, None),
    "nocaps": ("Provide a one-sentence caption for the provided image.", None, None, None),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_each_suite_loads_from_an_offline_hub_cache_and_scores(name, hub_cache):
    write_hub_cache(hub_cache, name)
    suite = load_suite(load_suite_spec(name))
    kept = 3 if name == "mmmu" else 6  # MMMU: no open question, no second image
    assert len(suite.items) == kept and len({i.id for i in suite.items}) == kept
    first = suite.items[0]
    prompt, refs, right, wrong = EXPECTED[name]
    assert first.prompt == prompt and first.image_mime == "image/png" and first.converted_from is None
    assert first.image_bytes == png(0)["bytes"]  # the stored bytes, sent as they are
    if refs is None:  # captions: the 5 / 10 human captions, CIDEr over the suite
        assert len(first.references) in (5, 10)
        return
    assert first.references == refs
    metric = first.metric
    assert score_answers(metric, [right], [first.references]) == [1.0]
    assert score_answers(metric, [wrong], [first.references]) == [0.0]


def test_a_renamed_column_is_named_with_the_columns_that_exist(hub_cache):
    write_hub_cache(hub_cache, "docvqa", rename={"answers": "answer_list"})
    with pytest.raises(SuiteError, match=r"'answers' is not a column of the dataset \(it has: questionId, .*answer_li"):
        load_suite(load_suite_spec("docvqa"))


def test_offline_without_the_data_says_what_to_do(hub_cache):
    with pytest.raises(SuiteError, match="offline.*BENCH_SUITE_DATA_CHARTQA"):
        load_suite(load_suite_spec("chartqa"))


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet", "hub_cache"])
def test_a_local_copy_works_through_name_equals_path_and_the_environment(layout, tmp_path, monkeypatch):
    ds = fixture_dataset("ai2d")
    if layout == "save_to_disk":
        ds.save_to_disk(str(tmp_path / "copy"))
        path = tmp_path / "copy"
    elif layout == "parquet":
        (tmp_path / "copy").mkdir()
        ds.to_parquet(str(tmp_path / "copy" / "test-00000-of-00001.parquet"))
        path = tmp_path / "copy"
    else:
        write_hub_cache(tmp_path / "hub", "ai2d")
        path = tmp_path / "hub"
    by_name = load_suite(load_suite_spec(f"ai2d={path}"))
    monkeypatch.setenv("BENCH_SUITE_DATA_AI2D", str(path))
    by_env = load_suite(load_suite_spec("ai2d"))
    assert by_name.content_hash == by_env.content_hash and len(by_env.items) == 6
    assert by_env.items[1].references == ("B", "larva")


def test_loading_leaves_no_cache_in_the_home_folder(tmp_path):
    """A fresh HOME: loading a parquet suite and a Hub-cache suite writes nothing under it."""
    write_hub_cache(tmp_path / "cache", "chartqa")
    home = tmp_path / "home"
    home.mkdir()
    code = ("from harness.config import load_suite_spec; from harness.suite import load_suite; "
            "load_suite(load_suite_spec('default'), limit=5); print(len(load_suite(load_suite_spec('chartqa')).items))")
    env = {**os.environ, "HOME": str(home), "BENCH_DATASETS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HOME", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "6", done.stderr
    assert [p for p in home.rglob("*") if p.is_file()] == []


def test_limit_draws_a_seeded_stratified_subset():
    labels = ["a"] * 80 + ["b"] * 15 + ["c"] * 5
    draw = stratified_indices(labels, 20, seed=0)
    assert len(draw) == 20 and draw == sorted(draw) and draw == stratified_indices(labels, 20, seed=0)
    assert [sum(labels[i] == k for i in draw) for k in "abc"] == [16, 3, 1]
    assert draw != list(range(20)) and stratified_indices(labels, 20, seed=1) != draw
    small = stratified_indices(labels, 3, seed=0)  # every label present while the limit allows
    assert sorted(labels[i] for i in small) == ["a", "b", "c"]
    assert stratified_indices(labels, 500) == list(range(100))


def test_limit_on_a_suite_keeps_task_shares(hub_cache):
    write_hub_cache(hub_cache, "chartqa", rows=20)
    suite = load_suite(load_suite_spec("chartqa"), limit=4)
    assert suite.task_counts() == {"augmented_test": 2, "human_test": 2}
    assert [i.id for i in suite.items] != ["test-0", "test-1", "test-2", "test-3"]


# --- images as real data has them ---------------------------------------------------------------------
def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def test_plain_png_jpeg_palette_and_alpha_travel_as_their_original_bytes():
    for raw in (encoded(Image.new("RGB", (8, 8), "red"), "PNG"), encoded(Image.new("RGB", (8, 8)), "JPEG"),
                encoded(Image.new("RGBA", (8, 8), (1, 2, 3, 4)), "PNG"),
                encoded(Image.new("RGB", (8, 8), "blue").convert("P"), "PNG")):
        sent, mime, note = prepare_image(raw, "x", 10_000, "refuse")
        assert sent == raw and note is None and mime in ("image/png", "image/jpeg")


def test_cmyk_and_16_bit_images_are_converted_once_and_say_so():
    sent, mime, note = prepare_image(encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), "x", 10_000,
                                     "refuse")
    assert mime == "image/png" and note == "JPEG: CMYK → RGB"
    assert Image.open(io.BytesIO(sent)).getpixel((0, 0))[0] > 200  # red stays red
    deep = Image.new("I;16", (8, 8), 40000)
    sent, _, note = prepare_image(encoded(deep, "PNG"), "x", 10_000, "refuse")
    assert note.startswith("PNG: I") and "→ L" in note
    assert Image.open(io.BytesIO(sent)).getpixel((0, 0)) == round(40000 * 255 / 65535)  # not clipped to 255


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (20, 10), "green")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    sent, _, note = prepare_image(encoded(img, "JPEG", exif=exif), "x", 10_000, "refuse")
    assert note == "JPEG: EXIF orientation 6 applied" and Image.open(io.BytesIO(sent)).size == (10, 20)


def test_large_scans_are_refused_or_downscaled_by_policy():
    raw = encoded(Image.new("L", (400, 300), 128), "PNG")
    with pytest.raises(SuiteError, match="over the suite's limit of 10000 pixels"):
        prepare_image(raw, "x", 10_000, "refuse")
    sent, _, note = prepare_image(raw, "x", 10_000, "downscale")
    width, height = Image.open(io.BytesIO(sent)).size
    assert width * height <= 10_000 and abs(width / height - 4 / 3) < 0.05
    assert note == f"PNG: downscaled 400x300 → {width}x{height}"


def test_a_thinking_suite_extends_its_base_and_reads_the_same_data(hub_cache, tmp_path, monkeypatch):
    write_hub_cache(hub_cache, "docvqa", rows=4)
    base, thinking = load_suite(load_suite_spec("docvqa")), load_suite(load_suite_spec("docvqa_thinking"))
    assert [i.id for i in thinking.items] == [i.id for i in base.items]
    assert [i.prompt for i in thinking.items] == [i.prompt for i in base.items]
    assert {i.system_prompt for i in thinking.items} == {"<|think|>"} and thinking.spec.max_tokens == 2048
    assert base.items[0].system_prompt is None and thinking.content_hash != base.content_hash
    fixture_dataset("docvqa", 3).save_to_disk(str(tmp_path / "copy"))
    monkeypatch.setenv("BENCH_SUITE_DATA_DOCVQA", str(tmp_path / "copy"))  # the base's local copy serves both
    assert len(load_suite(load_suite_spec("docvqa_thinking")).items) == 3


def test_extends_loops_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(f"extends: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"extends: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_suite_spec(str(tmp_path / "a.yaml"))


def test_mmmu_keeps_single_image_multiple_choice_questions_only(hub_cache):
    write_hub_cache(hub_cache, "mmmu")
    ids = [i.id for i in load_suite(load_suite_spec("mmmu")).items]
    assert ids == ["validation_Economics_1", "validation_Economics_2", "validation_Economics_6"]


def test_bad_keep_rules_are_config_errors(tmp_path):
    for rule, message in [("[{column: q}]", "needs equals or not_matching"), ("[{column: q, not_matching: '('}]",
                                                                              "not a regular expression"),
                          ("[q]", "must be a mapping")]:
        (tmp_path / "suite.yaml").write_text(f"data: {{format: parquet, path: d.parquet}}\n"
                                             f"columns: {{image: i, prompt: q}}\nkeep: {rule}\n")
        with pytest.raises(ConfigError, match=message):
            load_suite_spec(str(tmp_path / "suite.yaml"))


def test_nested_answers_read_as_a_list_of_dicts_or_a_dict_of_lists():
    from harness.suite import _references

    as_list = [{"answer": "2", "answer_id": 1}, {"answer": "two", "answer_id": 2}, {"answer": None, "answer_id": 3}]
    as_dict = {"answer": ["2", "two", None], "answer_id": [1, 2, 3]}  # a Sequence({...}) feature, row-wise
    assert _references(as_list, "answers.answer") == _references(as_dict, "answers.answer") == ["2", "two"]
    assert _references("x", "answer") == ["x"] and _references(None, "answer") == []


def test_bench_suites_lists_the_public_suites_with_metric_and_source_without_downloading(tmp_path):
    env = {**os.environ, "BENCH_DATASETS_CACHE": str(tmp_path / "none"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "harness.cli", "suites"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    for name, (repo, *_rest) in PUBLISHED.items():
        spec = load_suite_spec(name)
        assert spec.default_metric in lines[name] and f"hub {repo}" in lines[name] and "lmms-eval" in lines[name]
    assert not (tmp_path / "none").exists()


def test_rows_are_read_from_their_row_groups_across_shards(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.suite import _ArrowTable

    for shard in range(2):
        ids = [f"r{shard * 5 + k}" for k in range(5)]
        pq.write_table(pa.table({"id": ids, "x": list(range(5))}), tmp_path / f"s{shard}.parquet", row_group_size=2)
    table = _ArrowTable(sorted(tmp_path.glob("*.parquet")))
    assert table.num_rows == 10 and table.column("id") == [f"r{k}" for k in range(10)]
    assert [r["id"] for r in table.rows([0, 3, 4, 5, 9])] == ["r0", "r3", "r4", "r5", "r9"]
    (tmp_path / "s1.parquet").write_bytes((tmp_path / "s1.parquet").read_bytes()[:40])  # a truncated shard
    with pytest.raises(SuiteError, match="cannot read the parquet data"):
        _ArrowTable(sorted(tmp_path.glob("*.parquet")))
