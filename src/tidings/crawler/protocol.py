"""The JSON-lines protocol between the crawl child process and :mod:`tidings.crawler.runner`.

The child writes one JSON object per line to its (original) stdout; logs go to stderr. Every record
has a ``type``:

* ``{"type": "started", "pid": int, "spider": str, "urls": [str]}`` -- once, before crawling;
* ``{"type": "item", "item": {...}}`` -- a scraped item (:meth:`PropertyItem.to_json_dict` layout);
* ``{"type": "page", "url": str, "status": int}`` -- a response was received;
* ``{"type": "skipped", "url": str, "reason": str}`` -- a listing was deliberately dropped;
* ``{"type": "error", "kind": str, "url": str | None, "message": str, "start": bool}`` -- a request
  failed (``kind`` ``"unreachable"``, ``"http"``, ``"other"``) or a callback / pipeline raised
  (``kind`` ``"spider"``, ``"pipeline"``); ``start`` marks failures of start requests;
* ``{"type": "done", "reason": str, "start_ok": int, "stats": {...}}`` -- the spider closed with Scrapy's
  close reason (``"finished"``, ``"shutdown"``, ``"closespider_..."``);
* ``{"type": "fatal", "message": str}`` -- the crawl could not run (unknown spider, bad arguments...).

This module is shared by both sides and imports neither Scrapy nor Twisted.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

CHILD_MODULE: Final = "tidings.crawler.crawl_process"

STARTED: Final = "started"
ITEM: Final = "item"
PAGE: Final = "page"
SKIPPED: Final = "skipped"
ERROR: Final = "error"
DONE: Final = "done"
FATAL: Final = "fatal"

REPORT_FD_SETTING: Final = "TIDINGS_REPORT_FD"
"""Scrapy setting: the file descriptor the JSON-lines reporter writes to."""


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


def encode(record: dict[str, Any]) -> str:
    """One protocol line (with the trailing newline); non-JSON values become strings."""
    return json.dumps(record, default=_default, ensure_ascii=False, separators=(",", ":")) + "\n"


def decode(line: str | bytes) -> dict[str, Any] | None:
    """Parse one protocol line; None for blank lines or anything that is not a JSON object with a type."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        return None
    return record
