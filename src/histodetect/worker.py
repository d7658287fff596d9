"""One preloaded Python process that runs the workflow's script jobs, so that no job pays the
start-up tax (importing torch, timm and the package: 2-6 s) again.

Snakemake still runs one job per slide: each job's script starts, calls
:func:`hand_to_worker` before its heavy imports, and finds the worker's socket in
``.snakemake/``. The worker forks a copy of itself, already holding torch and the package, which
takes the job's standard streams, working folder, environment and arguments and runs the very
script Snakemake wrote; the job waits and ends with the copy's exit status. Outputs, logs,
failure records and the DAG keep their meaning; a job whose client dies (a cancelled run) has its
copy killed. Without a worker (SLURM jobs, ``io.worker: false``, another interpreter, a
``--use-conda`` env) the script runs in its own process as before.

Started by the Snakefile's ``onstart`` when jobs run on this machine (:func:`start_worker`),
stopped by ``onsuccess``/``onerror`` (:func:`stop_worker`) or when Snakemake's process ends.
It listens at once and preloads after; the first jobs queue until it is ready. Its preloaded
objects are frozen (:func:`gc.freeze`), so a fork's garbage collections never walk them.
This module imports only the standard library: the job's client side must start in
milliseconds.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import re
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOCKET = Path(".snakemake") / "histodetect-worker.sock"  # relative to the workdir
LOG = Path(".snakemake") / "log" / "histodetect-worker.log"
# What every script job imports, beside the package's modules its scripts name; anything else a
# job imports itself, in its fork.
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "torch",
    "torchvision",
    "timm",
    "h5py",
    "openslide",
    "PIL.Image",
    "matplotlib.pyplot",
)
TAKE_TIMEOUT_S = 300.0
"""How long a job waits for the worker to take it (it may still be preloading) before it runs
in its own process."""
LISTEN_WAIT_S = 5.0  # how long onstart waits for the worker's socket
_HEADER = struct.Struct("!I")
_STATUS = struct.Struct("!i")
_IN_WORKER = False  # True in a fork running a job: its script runs on, here
_JOB_MARK = "HISTODETECT_WORKER_JOB"  # set in a job's fork: it and its children never hand on


def hand_to_worker(snakemake: Any, socket_path: Path = SOCKET) -> None:
    """Run the calling script in the workflow's worker, if one is up, and exit with its status.

    Returns (the script goes on in this process) inside the worker's fork, when no worker
    listens, when the worker runs another interpreter than this job, or when it did not take
    the job within :data:`TAKE_TIMEOUT_S` (still preloading on a swamped machine, or gone).
    """
    if _IN_WORKER or os.environ.get(_JOB_MARK) or not socket_path.exists():
        return
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(socket_path))
    except OSError:
        client.close()
        return
    request = {
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "executable": sys.executable,
        "rule": str(getattr(snakemake, "rule", "")),
    }
    body = json.dumps(request).encode()
    sys.stdout.flush()
    sys.stderr.flush()
    client.settimeout(TAKE_TIMEOUT_S)  # a worker still preloading takes the job when it is done
    try:
        socket.send_fds(client, [_HEADER.pack(len(body))], [0, 1, 2])
        client.sendall(body)
        answer = _read_exactly(client, 1)
    except OSError:  # gone or wedged before taking it: this job runs here, once
        answer = b""
    if answer != b"A":  # declined (another interpreter) or never taken: run here
        client.close()
        return
    client.settimeout(None)
    status = _read_exactly(client, 1 + _STATUS.size)
    if len(status) != 1 + _STATUS.size:
        print(
            f"{request['rule']}: the worker's process for this job ended without a status",
            file=sys.stderr,
        )
        raise SystemExit(1)
    raise SystemExit(_STATUS.unpack(status[1:])[0])


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _run_job(conn: socket.socket) -> int:
    """In a fresh fork: take the job's streams and settings, run its script, return its status."""
    global _IN_WORKER
    header, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
    if len(header) != _HEADER.size or len(fds) != 3:
        return 1
    request = json.loads(_read_exactly(conn, _HEADER.unpack(header)[0]))
    if request["executable"] != sys.executable:
        conn.sendall(b"D")
        return 0
    try:
        conn.sendall(b"A")  # taken: the client now waits for the status, whatever happens
    except OSError:  # the client gave up waiting and runs the job itself
        return 0
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[_JOB_MARK] = str(os.getpid())
    sys.argv = list(request["argv"])
    _IN_WORKER = True
    threading.Thread(target=_end_with_client, args=(conn,), daemon=True).start()
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if stop.code is not None and not isinstance(stop.code, int):
            print(stop.code, file=sys.stderr)
    except BaseException as err:  # the job's failure, printed as Python would
        trace = traceback.extract_tb(err.__traceback__)
        own = next((i for i, frame in enumerate(trace) if frame.filename == sys.argv[0]), 0)
        print("Traceback (most recent call last):", file=sys.stderr)
        print("".join(traceback.format_list(trace[own:])), end="", file=sys.stderr)
        print("".join(traceback.format_exception_only(err)), end="", file=sys.stderr)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    conn.sendall(b"R" + _STATUS.pack(status))
    return status


def _end_with_client(conn: socket.socket) -> None:
    """Kill this job (and what it started) when its client goes: Snakemake cancelled it."""
    with contextlib.suppress(OSError):
        while conn.recv(1):
            pass
    with contextlib.suppress(OSError):
        os.killpg(0, signal.SIGKILL)


def _fork_job(conn: socket.socket, listener: socket.socket, log: Any) -> None:
    pid = os.fork()
    if pid:
        conn.close()
        print(f"{time.strftime('%H:%M:%S')} job process {pid}", file=log, flush=True)
        return
    status = 1
    try:
        listener.close()
        os.setpgid(0, 0)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        status = _run_job(conn)
    finally:
        os._exit(status)


def modules_to_preload(scripts: Path | None) -> list[str]:
    """:data:`PRELOAD` and the package modules that the scripts in ``scripts`` import."""
    names = list(PRELOAD)
    for script in sorted(scripts.glob("*.py")) if scripts is not None else []:
        for name in re.findall(r"^from (histodetect[\w.]*) import", script.read_text(), re.M):
            if name not in names:
                names.append(name)
    return names


def serve(socket_path: Path, parent: int, scripts: Path | None, log_path: Path = LOG) -> None:
    """Listen on ``socket_path``, preload what jobs import, then fork a process per job until
    ``parent`` (Snakemake) ends, the socket file goes or SIGTERM comes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", buffering=1)  # noqa: SIM115
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches Snakemake; it stops us
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    # listening before preloading: the jobs that start meanwhile queue for it (their own
    # imports would take as long, on the same cores)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(1024)
    started = time.perf_counter()
    preload = modules_to_preload(scripts)
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError as err:  # a job needing it fails with its own error
            print(f"not preloaded: {name}: {err}", file=log)
    # What was preloaded is never garbage: frozen, a fork's collections skip it, rather than
    # walk every object (a third of a second each) and copy the pages they touch
    gc.collect()
    gc.freeze()
    threads = len(os.listdir("/proc/self/task")) if Path("/proc/self/task").exists() else 1
    print(
        f"preloaded {len(preload)} modules in {time.perf_counter() - started:.1f} s, "
        f"{threads} thread(s)",
        file=log,
    )
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks are reaped by the kernel
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    try:
        while os.getppid() == parent and socket_path.exists():  # Snakemake, even killed, ends it
            if selector.select(timeout=1.0):
                conn, _ = listener.accept()
                _fork_job(conn, listener, log)
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        print(f"{time.strftime('%H:%M:%S')} stopped", file=log)


@dataclass(frozen=True)
class Worker:
    """A started worker: its process and socket."""

    process: subprocess.Popen[bytes]
    socket_path: Path


def start_worker(scripts: Path | None, socket_path: Path = SOCKET) -> Worker:
    """Start the worker for this Snakemake process and wait (milliseconds) until it listens.
    It then preloads what the scripts in ``scripts`` import (seconds); the jobs that start
    meanwhile wait for it (at most :data:`TAKE_TIMEOUT_S`) rather than import it all again."""
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    command = [sys.executable, "-m", "histodetect.worker", str(socket_path), str(os.getpid())]
    if scripts is not None:
        command.append(str(scripts))
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a") as log:  # never Snakemake's streams: a pipe held open would hang its reader
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + LISTEN_WAIT_S  # it listens before preloading: milliseconds
    while not socket_path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return Worker(process, socket_path)


def stop_worker(started: list[Worker]) -> None:
    """Stop the workers that :func:`start_worker` gave (the Snakefile's list; empty when jobs ran
    elsewhere). Jobs still running in them are not waited for: Snakemake has ended them."""
    while started:
        worker = started.pop()
        with contextlib.suppress(ProcessLookupError):
            worker.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(timeout=10)


if __name__ == "__main__":  # the module proper, not __main__, holds the forks' _IN_WORKER
    from histodetect import worker

    worker.serve(
        Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None
    )
