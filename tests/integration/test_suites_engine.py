"""A public suite with Gemma 4 thinking on, against the real vLLM CPU engine (tiny Gemma 4)."""

import pandas as pd
import pytest

from harness.config import default_engine_venv
from tests.conftest import bench
from tests.public_suites import write_hub_cache

pytestmark = pytest.mark.engine


@pytest.mark.skipif(not (default_engine_venv() / "bin" / "python").exists(),
                    reason="vLLM CPU engine not built (nox -s engine)")
def test_thinking_suite_system_prompt_is_accepted_by_the_gemma4_template(tmp_path):
    """The `<|think|>` system message goes through vLLM's Gemma 4 chat template: the requests
    succeed and carry more prompt tokens than the same items without it."""
    cache = tmp_path / "cache"
    write_hub_cache(cache, "docvqa", rows=2)
    env = {"BENCH_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    tokens = {}
    for suite in ("docvqa", "docvqa_thinking"):
        result = bench("run", "--variant", "cpu-tiny", "--suite", suite, "--max-tokens", "8", "--results-dir",
                       tmp_path, "--run-id", suite, "--idle-s", "0", timeout=900, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        requests = pd.read_parquet(tmp_path / suite / "requests.parquet").set_index("item_id").sort_index()
        assert (requests["status"] == "ok").all() and requests["score"].notna().all()
        tokens[suite] = requests["prompt_tokens"]
    assert (tokens["docvqa_thinking"] > tokens["docvqa"]).all()
