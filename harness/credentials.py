"""Secrets where they enter: the API key of an attached server and the server's URL.

A key is one line of visible ASCII, read from a file or the environment (never the command line:
shell history), and never appears in a message, a log or a results file: an error says what is
wrong with it, not what it is. Credentials in `--base-url` (`http://user:pass@host`) are refused,
because the URL is stored with the run; `redact_url` hides them wherever a URL is shown.
A variant's `env:` and `vllm:` blocks go to the server as written, but what a run stores of them
passes `redact_secrets` (keys kept, secret values replaced by "<redacted>")."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from harness.errors import ConfigError

KEY_VARIABLES = ("BENCH_API_KEY", "OPENAI_API_KEY")


def read_api_key(path: Path | None, environ: Mapping[str, str]) -> str | None:
    """The key from `path`, else from $BENCH_API_KEY / $OPENAI_API_KEY; None when there is none."""
    if path is not None:
        try:
            # Bytes, not text: a binary file is a wrong key to report, not a decoding traceback.
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(f"--api-key-file {path}: {exc.strerror}") from None
        return check_api_key(text, f"--api-key-file {path}")
    for name in KEY_VARIABLES:
        if environ.get(name):
            return check_api_key(environ[name], f"${name}")
    return None


def check_api_key(text: str, where: str) -> str:
    """The key alone on one line (surrounding whitespace, a final newline or CR dropped);
    a ConfigError naming `where` otherwise. The key itself is never part of the message."""
    key = text.strip()
    if not key:
        raise ConfigError(f"{where} is empty")
    lines = key.splitlines()
    if len(lines) > 1:
        raise ConfigError(f"{where} must hold the key alone on one line, with no comment; it has {len(lines)} "
                          f"lines (the key is not shown)")
    odd = sum(not ("!" <= c <= "~") for c in key)
    if odd:
        raise ConfigError(f"{where}: the key has {odd} character(s) that an HTTP header cannot carry (space, "
                          f"control or non-ASCII; the key is not shown)")
    return key


def redact_url(url: str) -> str:
    """`url` with any user:password replaced by `***`, for every place a URL is shown or stored."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def check_base_url(url: str) -> str:
    """An attachable server URL: http(s)://HOST[:PORT][/PATH], without credentials, query or fragment."""
    shown = redact_url(url)
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number in range
    except ValueError as exc:
        raise ConfigError(f"--base-url {shown}: {exc}") from None
    if "@" in parts.netloc:
        raise ConfigError(f"--base-url {shown}: credentials in the URL would be stored with the run; give the key "
                          f"with --api-key-file or $BENCH_API_KEY instead")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--base-url {shown}: expected http(s)://HOST[:PORT][/v1]")
    if parts.query or parts.fragment:
        raise ConfigError(f"--base-url {shown}: expected no query or fragment (it would be stored with the run)")
    return url.strip()


REDACTED = "<redacted>"
# Names that hold secrets (HF_TOKEN, VLLM_API_KEY, AWS_SECRET_ACCESS_KEY, DB_PASSWORD, hf-token, api_key...),
# matched on the name upper-cased with '-' as '_'. TOKEN and KEY only at the end (or as API/ACCESS key), so
# TOKENIZERS_PARALLELISM, max_num_batched_tokens or allowed_token_ids stay readable.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|TOKEN$|KEY$"
                         r"|(^|_)(PASS|AUTH|COOKIE)(_|$)")
# Values that are secrets whatever their name: Hugging Face, OpenAI, GitHub, Slack tokens, AWS key ids.
SECRET_VALUE = re.compile(r"^(hf_|sk-|ghp_|gho_|ghs_|github_pat_|xox[abprs]-|AKIA|ASIA)[A-Za-z0-9_\-]{8,}$")


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(str(name).upper().replace("-", "_")))


def redact_secrets(block: Mapping) -> dict:
    """A copy of an `env:` or `vllm:` block fit to be stored: the value of every key that names a
    secret, and every value that is a known token, becomes "<redacted>"; a password in a URL value
    becomes `***` (`redact_url`); nested blocks likewise. Keys are kept: a reader still sees that
    HF_TOKEN was set."""
    out = {}
    for key, value in (block or {}).items():
        if isinstance(value, Mapping):
            out[key] = redact_secrets(value)
        elif is_secret_name(key) or (isinstance(value, str) and SECRET_VALUE.match(value.strip())):
            out[key] = REDACTED
        elif isinstance(value, str) and "@" in value and "://" in value:
            out[key] = redact_url(value)
        else:
            out[key] = value
    return out
