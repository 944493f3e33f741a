"""The benchmark message shared by the baseline servers: a JSON text frame of about `size` bytes.

`{"bseq": <sequence number>, "bts": <publish time, ms since the epoch>, "pad": "xxxx..."}`. The load client
finds `bseq` and `bts` by key, so the same fields can also travel inside a Tidings publication's `data`.
"""

from __future__ import annotations

import json
import time


def now_ms() -> float:
    """Wall-clock time in milliseconds since the epoch (the load client uses the same clock)."""
    return time.time_ns() / 1e6


def bench_payload(seq: int, ts_ms: float, pad: int) -> dict[str, object]:
    """The payload fields with `pad` filler characters."""
    return {"bseq": seq, "bts": round(ts_ms, 3), "pad": "x" * max(pad, 0)}


def bench_message(seq: int, ts_ms: float, size: int) -> str:
    """A compact JSON text of `size` characters where possible (never shorter than the bare fields)."""
    bare = json.dumps(bench_payload(seq, ts_ms, 0), separators=(",", ":"))
    return json.dumps(bench_payload(seq, ts_ms, size - len(bare)), separators=(",", ":"))


def parse_control(text: str) -> tuple[int, int, int, float | None]:
    """A control request `{"publish": K, "seq0": S, "size": B, "t": ms?}` as (count, seq0, size, t)."""
    req = json.loads(text)
    t = req.get("t")
    return (
        int(req["publish"]),
        int(req.get("seq0", 0)),
        int(req.get("size", 64)),
        (float(t) if t is not None else None),
    )
