"""The preloaded job process: a script handed to it runs in a fork with the job's streams,
folder, environment and arguments, ends with the script's status, and dies with its client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from histodetect import worker

SCRIPT = textwrap.dedent(
    """
    import gc, os, sys, time
    from histodetect.worker import hand_to_worker

    class Job:
        rule = "demo"

    hand_to_worker(Job())
    print("in fork:", os.environ.get("HISTODETECT_WORKER_JOB") is not None, flush=True)
    print("env:", os.environ.get("JOB_VALUE"), "cwd:", os.getcwd(), "argv:", sys.argv[1:])
    print("to stderr", file=sys.stderr)
    print("frozen objects:", gc.get_freeze_count())
    if sys.argv[1] == "raise":
        raise ValueError("slide s1 is unreadable")
    if sys.argv[1] == "sleep":
        open("pid.txt", "w").write(str(os.getpid()))
        time.sleep(120)
    sys.exit(int(sys.argv[1]))
    """
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with a listening worker (parent: this test process) and the job script."""
    folder = tmp_path_factory.mktemp("worker")
    (folder / "job.py").write_text(SCRIPT)
    sock = folder / worker.SOCKET
    sock.parent.mkdir(parents=True)
    command = [sys.executable, "-m", "histodetect.worker", str(worker.SOCKET), str(os.getpid())]
    process = subprocess.Popen(command, cwd=folder, start_new_session=True)
    deadline = time.monotonic() + 120
    while not sock.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert sock.exists(), "the worker did not start listening"
    yield folder
    process.terminate()
    process.wait(timeout=20)
    assert not sock.exists()


def run_job(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOB_VALUE": "from-the-job"}
    command = [sys.executable, "job.py", *args]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=60)


def test_a_job_runs_in_the_fork_with_its_own_streams_env_and_status(served: Path) -> None:
    done = run_job(served, "3")
    assert done.returncode == 3
    assert "in fork: True" in done.stdout
    assert f"env: from-the-job cwd: {served} argv: ['3']" in done.stdout
    assert done.stderr.strip() == "to stderr"
    # the preloaded modules are frozen: the fork's garbage collections never walk them
    frozen = int(done.stdout.split("frozen objects:")[1].split()[0])
    assert frozen > 100_000


def test_a_failing_job_shows_its_own_traceback(served: Path) -> None:
    done = run_job(served, "raise")
    assert done.returncode == 1
    assert done.stderr.strip().endswith("ValueError: slide s1 is unreadable")
    assert "job.py" in done.stderr and "worker.py" not in done.stderr


def test_a_job_without_a_worker_runs_in_its_own_process(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(SCRIPT)
    done = run_job(tmp_path, "0")
    assert done.returncode == 0 and "in fork: False" in done.stdout


def test_a_job_started_while_the_worker_preloads_waits_for_it(tmp_path: Path) -> None:
    """start_worker returns once the worker listens, before its preload: the first jobs queue
    for the fork instead of importing everything themselves on the same cores."""
    (tmp_path / "job.py").write_text(SCRIPT)
    starter = textwrap.dedent(
        """
        import subprocess, sys
        from histodetect.worker import LOG, start_worker, stop_worker
        started = [start_worker(None)]
        preloaded = "preloaded" in LOG.read_text()
        done = subprocess.run([sys.executable, "job.py", "4"], capture_output=True, text=True)
        stop_worker(started)
        print("preloaded before the job:", preloaded, "status:", done.returncode)
        print(done.stdout)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", starter], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert "preloaded before the job: False status: 4" in done.stdout, done.stderr
    assert "in fork: True" in done.stdout


def test_a_job_the_worker_never_takes_runs_in_its_own_process(tmp_path: Path) -> None:
    """A worker gone before it took the job (the connection closed unanswered): the job runs
    once, in its own process, with its own status."""
    (tmp_path / "job.py").write_text(SCRIPT)
    sock = tmp_path / worker.SOCKET
    sock.parent.mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    listener.listen(1)

    def drop_one() -> None:
        conn, _ = listener.accept()
        conn.close()

    dropper = threading.Thread(target=drop_one)
    dropper.start()
    try:
        done = run_job(tmp_path, "5")
    finally:
        dropper.join(timeout=30)
        listener.close()
    assert done.returncode == 5
    assert "in fork: False" in done.stdout


def test_a_cancelled_job_takes_its_fork_with_it(served: Path) -> None:
    (served / "pid.txt").unlink(missing_ok=True)
    client = subprocess.Popen([sys.executable, "job.py", "sleep"], cwd=served)
    deadline = time.monotonic() + 60
    while not (served / "pid.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    fork = int((served / "pid.txt").read_text())
    assert fork != client.pid
    client.send_signal(signal.SIGTERM)
    client.wait(timeout=20)
    deadline = time.monotonic() + 20
    while Path(f"/proc/{fork}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{fork}").exists()


def test_the_preload_adds_the_package_modules_the_scripts_import(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from histodetect.slides.tiling import x\nimport torch\n")
    (tmp_path / "b.py").write_text("from histodetect.runner import rule_context\n")
    names = worker.modules_to_preload(tmp_path)
    assert names[: len(worker.PRELOAD)] == list(worker.PRELOAD)
    assert names[len(worker.PRELOAD) :] == ["histodetect.slides.tiling", "histodetect.runner"]


def test_the_worker_ends_with_a_killed_snakemake_not_yet_reaped(tmp_path: Path) -> None:
    """Snakemake SIGKILLed stays a zombie until its own parent reaps it; the worker must not
    wait for that (it would hold the streams that parent reads to their end)."""
    starter = textwrap.dedent(
        """
        import time
        from pathlib import Path
        from histodetect.worker import start_worker
        start_worker(None)
        time.sleep(600)
        """
    )
    snakemake = subprocess.Popen([sys.executable, "-c", starter], cwd=tmp_path)
    sock = tmp_path / worker.SOCKET
    deadline = time.monotonic() + 120
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sock.exists()
    os.kill(snakemake.pid, signal.SIGKILL)  # not waited for: a zombie
    deadline = time.monotonic() + 120  # it may still be preloading
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not sock.exists()
    snakemake.wait()
    assert "stopped" in (tmp_path / worker.LOG).read_text()
