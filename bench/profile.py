"""What one call costs on the wire: round trips and statements, from libpq's own trace of
the messages this process sends (a round trip is a simple Query or an extended-protocol Sync;
a statement the server parses is a Query or a Parse, a prepared one is Bind/Execute only)."""

import gc
import os
import tempfile
from dataclasses import dataclass

import psycopg
from psycopg import pq

from bench.load import ClientFactory


@dataclass(frozen=True)
class WireProfile:
    round_trips: float
    statements: float
    parsed: float  # statements the server had to parse and plan (not prepared)


def wire_profile(make_client: ClientFactory, *, ops: int = 50, calls_per_op: int = 1) -> WireProfile:
    """Run `ops` ops of one client in this thread, after a warm-up that lets psycopg prepare
    what it prepares; count the frontend messages of every connection it has open."""
    op, close = make_client(0)
    try:
        for i in range(10):
            op(i)
        connections = [
            obj for obj in gc.get_objects() if isinstance(obj, psycopg.Connection) and not obj.closed
        ]
        with tempfile.TemporaryFile("w+") as trace:
            for conn in connections:
                conn.pgconn.trace(trace.fileno())
                conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                for i in range(10, 10 + ops):
                    op(i)
            finally:
                for conn in connections:
                    conn.pgconn.untrace()
            os.fsync(trace.fileno())
            trace.seek(0)
            sent = [line.split("\t")[2].strip() for line in trace if line.startswith("F\t")]
    finally:
        close()
    per_call = ops * calls_per_op
    return WireProfile(
        round_trips=(sent.count("Query") + sent.count("Sync")) / per_call,
        statements=(sent.count("Query") + sent.count("Execute")) / per_call,
        parsed=(sent.count("Query") + sent.count("Parse")) / per_call,
    )
