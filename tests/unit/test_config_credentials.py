"""API keys and server URLs where they enter: one line, never echoed, no credentials stored."""

import pytest

from harness.credentials import check_api_key, check_base_url, read_api_key, redact_url
from harness.errors import ConfigError

SECRET = "sk-Secret-4242"


@pytest.mark.parametrize("text", [f"{SECRET}\n", f"{SECRET}\r\n", f"  {SECRET}\r", SECRET])
def test_a_key_alone_on_its_line_is_read_without_its_line_end(tmp_path, text):
    path = tmp_path / "key"
    path.write_bytes(text.encode())
    assert read_api_key(path, {}) == SECRET
    assert read_api_key(None, {"BENCH_API_KEY": text}) == SECRET


@pytest.mark.parametrize("text, message", [
    (f"# production key\n{SECRET}\n", "one line, with no comment; it has 2 lines"),
    (f"{SECRET}\rsk-other", "one line"),
    ("sk-Secret 4242", "1 character"),
    (f"{SECRET}\x00", "1 character"),
    (f"{SECRET}é", "1 character"),
    ("\n \n", "is empty"),
])
def test_a_malformed_key_is_refused_without_showing_it(tmp_path, text, message):
    path = tmp_path / "key"
    path.write_bytes(text.encode())
    for source in (lambda: read_api_key(path, {}), lambda: check_api_key(text, "$BENCH_API_KEY")):
        with pytest.raises(ConfigError, match=message) as info:
            source()
        assert "Secret" not in str(info.value) and len(str(info.value).splitlines()) == 1


def test_key_sources_in_order(tmp_path):
    assert read_api_key(None, {}) is None
    assert read_api_key(None, {"OPENAI_API_KEY": "b", "BENCH_API_KEY": "a"}) == "a"
    assert read_api_key(None, {"OPENAI_API_KEY": "b", "BENCH_API_KEY": ""}) == "b"
    with pytest.raises(ConfigError, match="--api-key-file .*missing"):
        read_api_key(tmp_path / "missing", {"BENCH_API_KEY": "a"})
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="2 character"):  # binary junk: an error, not a decoding traceback
        read_api_key(tmp_path / "bin", {})


def test_credentials_in_the_url_are_refused_and_never_shown():
    for url in ("http://user:hunter2@127.0.0.1:8000/v1", "http://hunter2@host", "https://u:hunter2@h:1/x?y#z"):
        with pytest.raises(ConfigError, match=r"\*\*\*@.*credentials in the URL") as info:
            check_base_url(url)
        assert "hunter2" not in str(info.value)
    assert redact_url("http://user:hunter2@127.0.0.1:8000/v1") == "http://***@127.0.0.1:8000/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("url, message", [
    ("127.0.0.1:8000", "expected http"), ("ftp://host/v1", "expected http"), ("http:///v1", "expected http"),
    ("http://host:99999/v1", "out of range"), ("http://host/v1?key=x", "no query"),
])
def test_malformed_server_urls(url, message):
    with pytest.raises(ConfigError, match=message):
        check_base_url(url)


def test_good_server_urls_pass_unchanged():
    for url in ("http://127.0.0.1:8000", "https://gpu-box.example/v1", "http://[::1]:8000/v1/"):
        assert check_base_url(url) == url
