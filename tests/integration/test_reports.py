"""Reports rebuilt from stored runs: `bench report`, `bench compare`, `bench submit`."""

import base64
import json
import re
import shutil
import subprocess

import pytest

from tests.conftest import H200_RUNS, bench, cli


@pytest.fixture
def gpu_runs(tmp_path):
    """Copies of recorded H200 runs (reports write beside them)."""
    out = {}
    for name in ("bf16-c1-r1", "fp8-c1-r1", "fp8-c16-r1"):
        shutil.copytree(H200_RUNS / name, tmp_path / name)
        out[name] = tmp_path / name
    return out


def test_run_report_of_a_recorded_gpu_run_is_self_contained(gpu_runs):
    run = gpu_runs["fp8-c16-r1"]
    result = bench("report", run)
    assert result.returncode == 0, result.stderr
    page = (run / "report.html").read_text()
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert not re.search(r'(src|href)="https?://', page)  # nothing fetched from the network
    for png in ("power.png", "energy_by_task.png", "phase_energy.png", "latency.png"):
        assert (run / png).stat().st_size > 10_000
    md = (run / "report.md").read_text()
    assert "NVIDIA H200" in md and "J / output token" in md and "NVML_FI_DEV_POWER_INSTANT" in md


def test_model_output_is_escaped(mock_server, tmp_path):
    server = mock_server("--answer", "<script>alert('x')</script> <b>bold</b>")
    assert cli("run", "--base-url", server.url, "--results-dir", tmp_path, "--run-id", "x", "--limit", "7",
                 "--idle-s", "0").returncode == 0
    result = cli("report", tmp_path / "x")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "x" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>bold" not in page
    assert "<script>" not in (tmp_path / "x" / "report.md").read_text()
    assert "energy unavailable" in page


def test_compare_shows_deltas_and_refuses_different_suites_unless_forced(gpu_runs, tmp_path, mock_server):
    result = cli("compare", gpu_runs["bf16-c1-r1"], gpu_runs["fp8-c1-r1"], "--out", tmp_path / "cmp")
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "cmp" / "compare.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| J/request"))
    assert "-25." in row  # FP8 vs bf16 one at a time on the H200
    assert (tmp_path / "cmp" / "energy_quality.png").exists()
    server = mock_server()
    assert cli("run", "--base-url", server.url, "--results-dir", tmp_path, "--run-id", "small", "--limit", "3",
                 "--idle-s", "0").returncode == 0
    refused = cli("compare", gpu_runs["bf16-c1-r1"], tmp_path / "small", "--out", tmp_path / "c2")
    assert refused.returncode == 2 and "suite differs" in refused.stderr
    forced = cli("compare", gpu_runs["bf16-c1-r1"], tmp_path / "small", "--out", tmp_path / "c2", "--force")
    assert forced.returncode == 0 and "although the runs differ" in (tmp_path / "c2" / "compare.md").read_text()


def test_submission_is_validated_and_checked(gpu_runs, tmp_path):
    result = cli("submit", gpu_runs["fp8-c1-r1"], "--baseline", gpu_runs["bf16-c1-r1"], "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "submission.json").read_text())
    assert doc["format_version"] == 1 and doc["energy"]["source"] == "counter"
    assert doc["energy"]["total_wh"] == pytest.approx(doc["energy"]["total_j"] / 3600)
    assert set(doc["files"]) == {"manifest.json", "summary.json", "requests.parquet", "power.parquet"}
    # Random weights answer nothing right: the gate cannot pass, the checker says so.
    check = cli("submit", "--check", tmp_path / "submission.json")
    assert check.returncode == 1 and "quality gate not passed" in check.stdout
    doc["sampling"]["temperature"] = 0.0
    doc["energy"]["source"] = "integral"
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    check = cli("submit", "--check", tmp_path / "edited.json")
    assert "temperature=0.0 is not the competition's 1.0" in check.stdout and "not from the hardware" in check.stdout
    del doc["energy"]
    (tmp_path / "broken.json").write_text(json.dumps(doc))
    assert_check_verifies_hashes_and_verdict(gpu_runs)
    broken = cli("submit", "--check", tmp_path / "broken.json")
    assert broken.returncode == 2 and "does not match its schema" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1


def assert_check_verifies_hashes_and_verdict(gpu_runs):
    """Issue 10 item 16: files edited after submitting, and a verdict that does not follow from
    the stored interval and threshold, are findings."""
    run = gpu_runs["fp8-c1-r1"]
    assert cli("submit", run, "--baseline", gpu_runs["bf16-c1-r1"]).returncode == 0
    path = run / "submission.json"
    doc = json.loads(path.read_text())
    assert "changed since" not in cli("submit", "--check", path).stdout
    doc["gate"].update(verdict="PASS", low=0.1, high=0.5, ratio=0.3)
    path.write_text(json.dumps(doc))
    with open(run / "requests.parquet", "ab") as f:
        f.write(b"edited")
    check = cli("submit", "--check", path)
    assert check.returncode == 1
    assert "requests.parquet changed since the submission was written" in check.stdout
    assert "gate verdict PASS does not follow from the interval [0.1, 0.5] and threshold 0.8" in check.stdout


CHECK_IMAGES = """<script>
window.addEventListener('load', () => {
  const bad = Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length;
  document.title = 'IMAGES ' + document.images.length + ' BROKEN ' + bad;
});
</script>"""


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (CI installs it)")
def test_report_renders_in_a_real_browser(gpu_runs, tmp_path):
    run = gpu_runs["fp8-c16-r1"]
    assert cli("report", run).returncode == 0
    probe = tmp_path / "probe.html"
    probe.write_text((run / "report.html").read_text().replace("</body>", CHECK_IMAGES + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(["chromium", *flags, "--enable-logging=stderr", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert "<title>IMAGES 4 BROKEN 0</title>" in dom.stdout, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", *flags, "--window-size=1200,2400", f"--screenshot={shot}",
                    (run / "report.html").as_uri()], capture_output=True, timeout=120)
    from PIL import Image
    with Image.open(shot) as img:
        assert img.size == (1200, 2400)
        low, high = img.convert("L").getextrema()
        assert high - low > 100  # not a blank page
