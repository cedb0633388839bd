"""The load driver: N concurrent clients for a fixed time, in a few processes.

Each client is one thread with its own database connection(s). Clients are spread over up to
`max_processes` forked processes, so the Python side of the load can use every core (one
process with 32 threads would measure the GIL, not the database).

Workloads that are compared run in rotation, in the same processes and threads: every client
does workload 0 for a slice of time, then workload 1, ... all clients switching together.
Whatever else loads the machine meanwhile (this one is shared) falls on every workload alike,
and the ratio between them stays meaningful even when the absolute figures move.
"""

import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# make_client(client_index) -> (op, close): op(i) does one unit of work, the i-th of this client.
ClientFactory = Callable[[int], tuple[Callable[[int], object], Callable[[], object]]]


@dataclass(frozen=True)
class Throughput:
    ops: int  # completed ops started inside the measured window
    seconds: float  # the window's time given to this workload
    total_ops: int  # ops completed at all, warm-up included: what the database must show
    cpu_seconds: float  # client threads' CPU time for the counted ops

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds

    @property
    def cpu_us_per_op(self) -> float:
        return 1e6 * self.cpu_seconds / max(1, self.ops)


def _run_clients(factories, indexes, barrier, results, warmup, duration, slice_seconds):
    k = len(factories)

    def client(index: int) -> None:
        ops, closers = [], []
        counted, total, cpu = [0] * k, [0] * k, [0.0] * k
        try:
            for make_client in factories:
                op, close = make_client(index)
                ops.append(op)
                closers.append(close)
        except BaseException:
            barrier.abort()
            results.put(("error", traceback.format_exc()))
            for close in closers:
                close()
            return
        try:
            barrier.wait()
            t0 = time.monotonic()
            start, end = t0 + warmup, t0 + warmup + duration
            i = 0
            while (now := time.monotonic()) < end:
                w = int((now - t0) / slice_seconds) % k  # whose slice it is
                cpu_before = time.thread_time()
                ops[w](i)
                total[w] += 1
                if now >= start:
                    counted[w] += 1
                    cpu[w] += time.thread_time() - cpu_before
                i += 1
            results.put(("ok", counted, total, cpu))
        except BaseException:
            barrier.abort()
            results.put(("error", traceback.format_exc()))
        finally:
            for close in closers:
                close()

    threads = [threading.Thread(target=client, args=(index,)) for index in indexes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def measure(
    factories: Sequence[ClientFactory],
    *,
    concurrency: int,
    warmup: float,
    duration: float,
    slice_seconds: float = 0.5,
    max_processes: int = 2,
) -> list[Throughput]:
    """Run `concurrency` clients for `warmup + duration` seconds, rotating through the
    workloads; count, per workload, the ops started in the last `duration` seconds.
    Raises if any client fails: a benchmark that hides errors lies."""
    if duration % (slice_seconds * len(factories)):
        raise ValueError("duration must hold a whole number of rotations")
    context = multiprocessing.get_context("fork")  # clients are closures: inherited, not pickled
    processes = min(concurrency, max_processes)
    barrier = context.Barrier(concurrency)
    results = context.Queue()
    workers = [
        context.Process(
            target=_run_clients,
            args=(
                factories,
                range(p, concurrency, processes),
                barrier,
                results,
                warmup,
                duration,
                slice_seconds,
            ),
            daemon=True,
        )
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=warmup + duration + 300) for _ in range(concurrency)]
    for worker in workers:
        worker.join(timeout=60)
    errors = [o[1] for o in outcomes if o[0] == "error"]
    if errors:
        raise RuntimeError(f"{len(errors)} of {concurrency} clients failed; the first:\n{errors[0]}")
    return [
        Throughput(
            ops=sum(o[1][w] for o in outcomes),
            seconds=duration / len(factories),
            total_ops=sum(o[2][w] for o in outcomes),
            cpu_seconds=sum(o[3][w] for o in outcomes),
        )
        for w in range(len(factories))
    ]
