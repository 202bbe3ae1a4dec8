"""benchmarks/models/make_gemma4_dummy.make_portable: the one config form that the GPU payload's
transformers 5.10 and the CPU engine's transformers 5.19 read as the same Gemma 4 model. (That both
versions build identical weights and logits from it was checked with both installed, 2026-11-28.)"""

import importlib.util
import json

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("make_gemma4_dummy", ROOT / "benchmarks/models/make_gemma4_dummy.py")
dummy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dummy)


def write(folder, text=None, vision=None):
    config = {"text_config": {"head_dim": 64, "layer_types": ["sliding_attention", "full_attention"],
                              "per_layer_config": {"1": {"head_dim": 128}}, **(text or {})},
              "vision_config": {"hidden_size": 128, "rope_parameters": {"rope_theta": 100.0, "rope_type": "axial"},
                                **(vision or {})}}
    (folder / "config.json").write_text(json.dumps(config))


def test_per_layer_head_size_becomes_global_head_dim_and_the_rope_name_is_left_to_each_version(tmp_path):
    write(tmp_path)
    dummy.make_portable(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["text_config"]["global_head_dim"] == 128
    assert "per_layer_config" not in config["text_config"]
    assert "rope_parameters" not in config["vision_config"]
    dummy.make_portable(str(tmp_path))  # idempotent
    assert json.loads((tmp_path / "config.json").read_text()) == config


@pytest.mark.parametrize("text, vision, message", [
    ({"per_layer_config": {"1": {"head_dim": 128}, "3": {"head_dim": 256}}}, None, "no global_head_dim"),
    ({"per_layer_config": {"1": {"head_dim": 128, "num_key_value_heads": 2}}}, None, "no global_head_dim"),
    (None, {"rope_parameters": {"rope_theta": 1000.0, "rope_type": "axial"}}, "rope_theta 1000.0"),
])
def test_what_no_portable_form_can_say_is_refused(tmp_path, text, vision, message):
    write(tmp_path, text, vision)
    with pytest.raises(SystemExit, match=message):
        dummy.make_portable(str(tmp_path))


def test_the_committed_reference_folders_are_portable(tmp_path):
    for name in ("reference", "reference-fp8"):
        source = ROOT / "benchmarks" / "models" / name / "config.json"
        (tmp_path / "config.json").write_text(source.read_text())
        dummy.make_portable(str(tmp_path))
        assert json.loads((tmp_path / "config.json").read_text()) == json.loads(source.read_text())
