"""Celery end to end through Redis: a real `celery worker` with 2 processes, tasks published
by this process, results read back from the Redis result backend.

A figure is N tasks published at once and the time until the last one's result is stored
(its `date_done`), from the first publish. The no-op task, the raw-SQL task (the baseline
`llm.route` is judged against) and the LLM tasks go through the same broker, workers and
result backend, in alternating rounds (bench.run), so they share the machine's background
load too. The tasks are bench.celery_app's.
"""

import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis

BASE_DIR = Path(__file__).resolve().parent.parent
RESULT_KEY = "celery-task-meta-{}"


@dataclass(frozen=True)
class TaskRun:
    tasks: int
    calls: int  # LLM calls the tasks carried (a batch task carries many)
    seconds: float

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.seconds

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds


def redis_available(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


class BenchWorker:
    """`celery -A bench.celery_app worker -Q llm -c 2`, logging to a file, in its own process
    group so that stopping it stops its children too."""

    def __init__(self, *, redis_url: str, log_path: Path, concurrency: int = 2):
        self.redis = redis.Redis.from_url(redis_url)
        # Leftovers of an interrupted run would be consumed as this run's work.
        self.redis.delete("llm", "unacked", "unacked_index", "unacked_mutex")
        env = {
            **os.environ,
            "CELERY_BROKER_URL": redis_url,
            "CELERY_RESULT_BACKEND": redis_url,
        }
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "-Q", "llm",
             "-c", str(concurrency), "--pool", "prefork", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"bench-{uuid.uuid4().hex[:8]}@%h"],
            cwd=BASE_DIR, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the benchmark's Celery worker exited; its log:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text()[-4000:]

    def run(
        self, app, name: str, arguments: list[tuple[list, dict]], *, calls: int, timeout: float
    ) -> TaskRun:
        """Publish one task per (args, kwargs), wait for every result; fail on any failure."""
        ids = [uuid.uuid4().hex for _ in arguments]
        started = time.time()
        with app.producer_or_acquire() as producer:
            for task_id, (args, kwargs) in zip(ids, arguments, strict=True):
                app.send_task(name, args=args, kwargs=kwargs, task_id=task_id, producer=producer)
        keys = [RESULT_KEY.format(task_id) for task_id in ids]
        # Tasks finish about in the order they were sent: watch the oldest unfinished one, so
        # that waiting costs the machine next to nothing (the end time is the tasks' own).
        pending = 0
        deadline = time.monotonic() + timeout
        while pending < len(keys):
            if self.redis.exists(keys[pending]):
                pending += 1
                continue
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{len(keys) - pending} of {len(keys)} {name} tasks unfinished after {timeout:.0f}s; "
                    f"worker log:\n{self.log_tail()}"
                )
            time.sleep(0.02)
        metas = [json.loads(raw) for raw in self.redis.mget(keys)]
        failed = [m for m in metas if m["status"] != "SUCCESS"]
        if failed:
            raise RuntimeError(f"{len(failed)} {name} tasks failed; the first: {failed[0].get('result')}")
        self.redis.delete(*keys)
        finished = max(_timestamp(m["date_done"]) for m in metas)
        return TaskRun(tasks=len(ids), calls=calls, seconds=finished - started)


def _timestamp(iso: str) -> float:
    moment = datetime.datetime.fromisoformat(iso)
    if moment.tzinfo is None:  # Celery stores UTC
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()
