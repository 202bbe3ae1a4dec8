"""Keeps a launched server's process group from outliving `bench`, however `bench` ends.

`bench` (harness/server.py) starts this file as the leader of a new process group:

    python -I launcher.py --watch-fd R --report-fd W --grace-s S [--sweep-grace-s G] -- CMD ...

It starts CMD (the vLLM server) as its child, in its own group, so the engine's workers are in it
too; writes the child's pid to W; then waits. `bench` holds the only write end of the pipe R
and never writes to it: when `bench` exits -- normally, by an exception, by SIGKILL, by SIGHUP,
by `os._exit` -- the kernel closes it, R reads EOF, and this launcher stops the whole group
(SIGTERM, then SIGKILL after S seconds, itself included). A parent-pid check backs the pipe up,
and the server gets SIGTERM if this launcher is killed too (PR_SET_PDEATHSIG).
When the server exits on its own, its orphaned workers are stopped and the launcher exits the
way the server did (same code, or killed by the same signal), so `bench` sees the server's status.

Standard library only, run with `-I`: a variant's `PYTHONPATH`/`PYTHONHOME` (meant for the
server's interpreter) cannot break it, and it does not import the harness."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.25
PR_SET_PDEATHSIG = 1
SWEEP_GRACE_S = 2.0  # for workers orphaned by a server that already exited (--sweep-grace-s)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`, from /proc (empty where there is none)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _say(text: str) -> None:
    # stderr is the server's log: what the launcher did is read there beside the server's own lines.
    with contextlib.suppress(OSError):
        print(f"[bench launcher] {text}", file=sys.stderr, flush=True)


def _sweep_others(grace_s: float) -> None:
    """The server's main process is gone: stop what is left of its group, except this launcher."""
    me, pgid = os.getpid(), os.getpgrp()
    deadline = time.monotonic() + grace_s
    sig = signal.SIGTERM
    while True:
        others = [pid for pid in group_members(pgid) if pid != me]
        if not others:
            return
        if sig == signal.SIGTERM:
            _say(f"the server exited; stopping {len(others)} process(es) it left in its group")
        for pid in others:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if time.monotonic() > deadline:
            if sig == signal.SIGKILL:
                return
            sig, deadline = signal.SIGKILL, time.monotonic() + grace_s
        time.sleep(0.1)


def _stop_group(child: subprocess.Popen, grace_s: float) -> None:
    """`bench` is gone: the whole group goes, this launcher last (SIGKILL to the group)."""
    _say(f"bench is gone; stopping the server (process group {os.getpgrp()})")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgrp(), signal.SIGTERM)  # our own handler ignores it
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=grace_s)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _die_with(launcher_pid: int):
    """For the server's main process, between fork and exec: SIGTERM when this launcher dies (Linux
    PR_SET_PDEATHSIG), so a server whose `bench` and launcher were killed together shuts down (and
    takes its engine with it) instead of waiting for `--resume` to find it. Elsewhere a no-op."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != launcher_pid:  # the launcher died before the line above: act now
            os.kill(os.getpid(), signal.SIGTERM)
    return arm


def _exit_like(code: int) -> None:
    if code < 0:  # killed by a signal: die by the same one, so `bench` reads the same status
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1.0)
        sys.exit(128 - code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="launcher")
    ap.add_argument("--watch-fd", type=int, required=True)
    ap.add_argument("--report-fd", type=int, required=True)
    ap.add_argument("--grace-s", type=float, default=20.0)
    ap.add_argument("--sweep-grace-s", type=float, default=SWEEP_GRACE_S)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    parent = os.getppid()
    # bench stops the server with SIGTERM to the whole group, which reaches us too: we outlive the
    # server to report how it ended. A Python handler (not SIG_IGN) so the child starts with the default.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=_die_with(os.getpid()))
    except OSError as exc:
        _say(f"cannot start {command[0] if command else '(nothing)'}: {exc}")
        sys.exit(127)
    os.write(args.report_fd, f"{child.pid}\n".encode())
    os.close(args.report_fd)
    while True:
        code = child.poll()
        if code is not None:
            _sweep_others(args.sweep_grace_s)
            _exit_like(code)
        readable, _, _ = select.select([args.watch_fd], [], [], POLL_S)
        if readable or os.getppid() != parent:
            _stop_group(child, args.grace_s)


if __name__ == "__main__":
    main()
