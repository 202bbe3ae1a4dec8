"""Secrets against a real `bench run` and the mock server: a malformed key or a URL with a
password stops the run before anything is written, in one line that does not show the secret."""

from tests.conftest import bench

SECRET = "sk-Secret-4242"


def test_a_key_file_with_a_comment_is_refused_and_never_echoed(mock_server, tmp_path):
    server = mock_server()
    key = tmp_path / "key"
    key.write_text(f"# the production key\n{SECRET}\n")
    result = bench("run", "--base-url", server.url, "--api-key-file", key, "--results-dir", tmp_path / "r",
                   "--idle-s", "0", "--limit", "1")
    assert result.returncode == 2 and "one line" in result.stderr
    assert SECRET not in result.stdout + result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() and server.received() == []


def test_a_key_ending_in_cr_is_used_without_it(mock_server, tmp_path):
    server = mock_server()
    result = bench("run", "--base-url", server.url, "--results-dir", tmp_path, "--run-id", "cr", "--idle-s", "0",
                   "--limit", "1", env={"BENCH_API_KEY": SECRET + "\r"})
    assert result.returncode == 0, result.stderr
    for path in (tmp_path / "cr").iterdir():
        assert SECRET.encode() not in path.read_bytes(), path.name


def test_a_password_in_the_base_url_is_refused_and_never_shown(mock_server, tmp_path):
    server = mock_server()
    url = server.url.replace("http://", "http://user:hunter2@")
    result = bench("run", "--base-url", url, "--results-dir", tmp_path / "r", "--idle-s", "0", "--limit", "1")
    assert result.returncode == 2 and "http://***@127.0.0.1" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists() and server.received() == []
