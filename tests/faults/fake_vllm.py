"""Stands in for `python -m vllm.entrypoints.openai.api_server` in process-lifetime tests.

A variant's `server: python:` points at a shell script that runs this file with the flags `bench`
passes to vLLM. Like vLLM it starts an engine worker in its own process group; the worker
ignores SIGTERM (a stuck worker holding the GPU is what must never survive), and the server takes
SHUTDOWN_S to stop on SIGTERM (vLLM's graceful shutdown), so a second Ctrl-C lands while `bench`
is still waiting for it. It serves the mock OpenAI API on the port it is given."""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from harness.mock_server import main as serve  # noqa: E402

SHUTDOWN_S = 1.5
WORKER = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--served-model-name", required=True)
    args, _ = ap.parse_known_args()
    subprocess.Popen([sys.executable, "-c", WORKER])

    def shutdown(*_):
        # One graceful shutdown, as vLLM's: a repeated SIGTERM (stop_leftover repeats it) does not restart it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(SHUTDOWN_S)
        os._exit(0)  # the worker is left behind, as a crashed engine would leave it

    signal.signal(signal.SIGTERM, shutdown)
    serve(["--port", str(args.port), "--model", args.served_model_name, "--ttft-ms", "50", "--tokens", "4"])


if __name__ == "__main__":
    main()
