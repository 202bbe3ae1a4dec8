"""Variants and run settings, validated where they enter."""

import pytest

from harness.config import RunSettings, load_suite_spec, load_variant
from harness.errors import ConfigError


def test_model_card_variants():
    bf16, fp8 = load_variant("bf16"), load_variant("fp8")
    for v in (bf16, fp8):
        assert v.vllm["dtype"] == "bfloat16" and v.vllm["max_model_len"] == 4096
        assert v.vllm["limit_mm_per_prompt"] == {"image": 1} and v.vllm["max_num_seqs"] == 32
        assert v.vllm["enable_chunked_prefill"] and v.vllm["enable_prefix_caching"]
    assert fp8.vllm["kv_cache_dtype"] == "fp8" and "kv_cache_dtype" not in bf16.vllm
    assert fp8.env["VLLM_TEST_FORCE_FP8_MARLIN"] == "1"
    assert fp8.dummy_model.layout == "fp8" and bf16.dummy_model.layout == "bf16"


def test_model_path_from_environment(monkeypatch):
    monkeypatch.setenv("BENCH_MODEL_FP8", "/models/mine")
    assert load_variant("fp8").model == "/models/mine"


def test_pasted_vllm_config_keeps_vllm_keys(tmp_path):
    path = tmp_path / "team.yaml"
    path.write_text("vllm:\n  model: org/model\n  kv_cache_dtype: fp8\n  gpu_memory_utilization: 0.9\n")
    v = load_variant(str(path))
    assert v.model == "org/model" and v.vllm == {"kv_cache_dtype": "fp8", "gpu_memory_utilization": 0.9}


@pytest.mark.parametrize("text, message", [
    ("name: x\nvllm: [1, 2]\n", "key 'vllm' must be dict"),
    ("name: x\nspeed: fast\n", "unknown key 'speed'"),
    ("name: x\nvllm: {a: 1\n", "malformed YAML"),
    ("- just a list\n", "expected a mapping"),
    ("name: x\ndummy_model: {preset: huge}\n", "preset must be tiny|e4b"),
])
def test_bad_variant_files_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_variant(str(path))
    assert str(path) in str(info.value)


def test_unknown_variant_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown variant 'fp4'.*bf16"):
        load_variant("fp4")


def test_run_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="--concurrency"):
        RunSettings(results_dir=tmp_path, run_id="x", concurrency=0)
    with pytest.raises(ConfigError, match="--run-id"):
        RunSettings(results_dir=tmp_path, run_id="../escape")
    with pytest.raises(ConfigError, match="--power-trace"):
        RunSettings(results_dir=tmp_path, run_id="x", energy="trace")


def test_default_suite_spec():
    spec = load_suite_spec("default")
    assert spec.max_tokens == 32 and spec.columns.image == "image"
