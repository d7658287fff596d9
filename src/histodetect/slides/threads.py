"""Reading threads: the cores a process has, their share per loader worker, one pool per process."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (pid, threads) -> pool
_JOB_THREADS: list[int] = []  # set once by a workflow job: its reading threads


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; what a Snakemake job was given)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def use_job_threads(configured: int | None, job_cores: int) -> int:
    """Set this process's reading threads: the config's ``io.threads``, at most the job's cores
    (None: all of them). Loaders made after this split them (:func:`threads_per_worker`)."""
    threads = max(1, job_cores if configured is None else min(configured, job_cores))
    _JOB_THREADS[:] = [threads]
    return threads


def use_rule_threads(snakemake: Any) -> int:
    """For a workflow script: :func:`use_job_threads` of the config's ``io.threads`` and the
    job's threads. Read from the config, not a rule's params: threads change no output, so a
    new value reruns nothing."""
    config = getattr(snakemake, "config", None) or {}
    return use_job_threads(config.get("io", {}).get("threads"), int(snakemake.threads))


def reading_threads() -> int:
    """The reading threads of this process: what :func:`use_job_threads` set, else its cores."""
    return _JOB_THREADS[0] if _JOB_THREADS else available_cores()


def threads_per_worker(threads: int | None, workers: int) -> int:
    """Reading threads of each of ``workers`` loader processes (0: the main process reads).

    ``threads`` (None: :func:`reading_threads`) is split between the readers, so that all of
    them together never run more threads than that; each gets at least one.
    """
    total = reading_threads() if threads is None else threads
    return max(1, total // max(1, workers))


def thread_pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of ``threads`` threads (made once; a forked child makes its own)."""
    key = (os.getpid(), threads)
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="histodetect-read")
    return pool


def map_on_threads(fn: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    """``[fn(i) for i in items]``, on :func:`thread_pool` when ``threads`` > 1 and it pays."""
    if threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    return list(thread_pool(threads).map(fn, items))
