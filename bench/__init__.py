"""The Skeldir LLM benchmark: every figure against a raw-SQL baseline measured in the same run.

Run it with `.venv/bin/python -m bench` (see BENCHMARKS.md). It works in a database of its
own (`skeldir_bench`), never in the development database.
"""
