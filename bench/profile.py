"""What one call costs on the wire: round trips and statements, from libpq's own trace of
the messages this process sends. A round trip is a simple-protocol Query or an extended-
protocol Sync; a statement is a Query or an Execute; the server parses and plans a statement
sent as a Query or a Parse (BEGIN and COMMIT aside: nothing to plan), and a prepared one,
sent as Bind and Execute only, not again."""

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
    ops_run: int  # warm-up included: the calls this wrote are ops_run x calls_per_op


def wire_profile(
    make_client: ClientFactory, *, ops: int = 50, calls_per_op: int = 1, warmup: int = 10
) -> WireProfile:
    """Run `ops` ops of one client in this thread, after a warm-up that lets psycopg prepare
    what it prepares; count the frontend messages of every connection it has open."""
    op, close = make_client(0)
    try:
        for i in range(warmup):
            op(i)
        connections = [
            obj for obj in gc.get_objects() if isinstance(obj, psycopg.Connection) and not obj.closed
        ]
        with tempfile.TemporaryFile("w+") as trace:
            for conn in connections:
                conn.pgconn.trace(trace.fileno())
                conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                for i in range(warmup, warmup + ops):
                    op(i)
            finally:
                for conn in connections:
                    conn.pgconn.untrace()
            os.fsync(trace.fileno())
            trace.seek(0)
            sent = [line.rstrip("\n").split("\t", 3)[2:] for line in trace if line.startswith("F\t")]
    finally:
        close()
    per_call = ops * calls_per_op
    kinds = [message[0] for message in sent]
    planned = [
        message
        for message in sent
        if message[0] == "Parse"
        or (message[0] == "Query" and message[1].strip() not in {'"BEGIN"', '"COMMIT"'})
    ]
    return WireProfile(
        round_trips=(kinds.count("Query") + kinds.count("Sync")) / per_call,
        statements=(kinds.count("Query") + kinds.count("Execute")) / per_call,
        parsed=len(planned) / per_call,
        ops_run=warmup + ops,
    )
