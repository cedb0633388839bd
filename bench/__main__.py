"""`python -m bench`: every figure of issue 7 against its baseline, measured in one run.

Prints Markdown tables (the ones in BENCHMARKS.md) and exits non-zero if the money does not
add up at the end. Progress goes to stderr. See BENCHMARKS.md for what each figure means.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REDIS_URL = "redis://127.0.0.1:6379/12"  # a Redis database of the benchmark's own


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A small, fast run (a smoke test, not figures).")
    parser.add_argument("--database", default="skeldir_bench", help="The benchmark's own database.")
    parser.add_argument(
        "--superuser-url",
        default=os.environ.get("BENCH_SUPERUSER_URL"),
        help="With DATABASE_URL set: a superuser on that server (env BENCH_SUPERUSER_URL).",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", REDIS_URL),
        help=f"Broker and result backend for the Celery figures (default {REDIS_URL}).",
    )
    args = parser.parse_args()
    started = time.monotonic()

    from bench.database import prepare_database

    database = prepare_database(name=args.database, superuser_url=args.superuser_url)
    # The benchmark's Celery traffic stays on its own Redis database.
    os.environ["CELERY_BROKER_URL"] = os.environ["CELERY_RESULT_BACKEND"] = args.redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skeldir.settings")
    import django

    django.setup()
    from bench.run import FULL, QUICK, Run

    run = Run(
        database=database,
        scale=QUICK if args.quick else FULL,
        redis_url=args.redis_url,
        log_dir=Path(tempfile.mkdtemp()),
    )
    run.machine(quick=args.quick)
    run.setup()
    run.reads()
    run.writes()
    run.cap_burst()
    run.batches()
    run.profiles()
    run.celery()
    exact = run.exactness()
    print(run.report(elapsed=time.monotonic() - started))
    if not exact.ok:
        print("\nEXACTNESS CHECK FAILED:", *exact.problems[:20], sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if platform.system() != "Linux":
        sys.exit("The benchmark forks its load processes and reads /proc: Linux only.")
    sys.exit(main())
