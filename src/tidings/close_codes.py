"""The close-code table: every WebSocket close code of the protocol, what it means and what a client does next.

This table is the one source of the close codes. :class:`CloseCode` (the server), :func:`close_action` (the
Python client), the JavaScript ``close-codes.js`` / ``close-codes.d.ts`` (generated from it by
``python -m tidings.codegen``; a test fails when they drift), the dashboard (through the JS module), the
AsyncAPI document (``GET /asyncapi.json``) and docs/protocol.md's table all come from it.

Actions, after a close with a code:

``stop``
    a normal closure: go offline quietly.
``reconnect``
    reconnect with exponential backoff and jitter, resubscribe with ``since`` and recover from history.
``pause``
    reconnect, but only after the longest backoff delay (the client flooded the server).
``refresh``
    the access token expired: reconnect only with a *different* token, from a token function (a static token,
    or the function returning the same token again, ends in ``terminal``: the user must sign in again).
``terminal``
    go offline and report; never retry.

Pure data and functions; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = [
    "CLOSE_CODES",
    "CLOSE_RANGES",
    "CloseAction",
    "CloseCode",
    "CloseCodeInfo",
    "CloseRange",
    "close_action",
    "close_info",
    "signs_out",
]


class CloseAction(StrEnum):
    """What a client does after a close (see the module docstring)."""

    STOP = "stop"
    RECONNECT = "reconnect"
    PAUSE = "pause"
    REFRESH = "refresh"
    TERMINAL = "terminal"

    @property
    def retries(self) -> bool:
        """True for the actions that open a new connection (reconnect, pause, refresh)."""
        return self in (CloseAction.RECONNECT, CloseAction.PAUSE, CloseAction.REFRESH)


class CloseCode(IntEnum):
    """WebSocket close codes of the protocol (the table :data:`CLOSE_CODES` says what each means)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    ABNORMAL = 1006
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    SLOW_CONSUMER = 4000
    IDLE_TIMEOUT = 4001
    RATE_LIMITED = 4002
    TOKEN_EXPIRED = 4003
    PERMISSIONS_CHANGED = 4004

    @property
    def info(self) -> CloseCodeInfo:
        """This code's row of the table."""
        return CLOSE_CODES[self]

    @property
    def action(self) -> CloseAction:
        """What a client does after this close."""
        return CLOSE_CODES[self].action

    @property
    def reconnect(self) -> bool:
        """True when a client comes back after this close (reconnect, pause or refresh)."""
        return CLOSE_CODES[self].action.retries


@dataclass(frozen=True, slots=True)
class CloseCodeInfo:
    """One row of the close-code table.

    ``sent_by_server`` is False for codes only a client sees (1006: the connection dropped without a close frame).
    ``sign_in`` marks closes after which the user must sign in again (when the action ends in ``terminal``);
    ``sign_in_reasons`` does so for some reasons of a code only (1008's authentication failures; a reason
    matches when the close reason starts with it).
    ``reason_actions`` overrides the action for a given close reason.
    """

    code: CloseCode
    action: CloseAction
    meaning: str
    sent_by_server: bool = True
    sign_in: bool = False
    sign_in_reasons: tuple[str, ...] = ()
    reason_actions: tuple[tuple[str, CloseAction], ...] = ()

    @property
    def name(self) -> str:
        """The code's name (``TOKEN_EXPIRED``)."""
        return self.code.name


@dataclass(frozen=True, slots=True)
class CloseRange:
    """A range of codes not listed one by one (application-defined codes)."""

    first: int
    last: int
    action: CloseAction
    meaning: str


#: Reasons of a 1008 close that mean the credentials are not (or no longer) good: sign in again.
AUTH_REASONS = (
    "Authentication required",
    "Invalid token",
    "Token expired",
    "Token revoked",
    "User not found or inactive",
)

_ROWS = (
    CloseCodeInfo(CloseCode.NORMAL, CloseAction.STOP, "Normal closure"),
    CloseCodeInfo(
        CloseCode.GOING_AWAY,
        CloseAction.RECONNECT,
        "Server going away (shutdown, restart): reconnect, to another node, and recover from history",
    ),
    CloseCodeInfo(
        CloseCode.ABNORMAL,
        CloseAction.RECONNECT,
        "The connection dropped without a close frame (network failure, heartbeat timeout); never sent",
        sent_by_server=False,
    ),
    CloseCodeInfo(
        CloseCode.POLICY_VIOLATION,
        CloseAction.TERMINAL,
        "Policy violation: authentication, origin or connection limits; the reason says which",
        sign_in_reasons=AUTH_REASONS,
        # the user's connection limit: a dead node's connections are released within seconds, so retry (slowly)
        reason_actions=(("Too many connections", CloseAction.PAUSE),),
    ),
    CloseCodeInfo(
        CloseCode.MESSAGE_TOO_BIG,
        CloseAction.TERMINAL,
        "Message too big (TIDINGS_MAX_MESSAGE_BYTES)",
    ),
    CloseCodeInfo(CloseCode.INTERNAL_ERROR, CloseAction.RECONNECT, "Internal server error"),
    CloseCodeInfo(
        CloseCode.TRY_AGAIN_LATER,
        CloseAction.RECONNECT,
        "Try again later: the node or the client address is at its connection cap",
    ),
    CloseCodeInfo(
        CloseCode.SLOW_CONSUMER,
        CloseAction.RECONNECT,
        "Slow consumer: the outbound queue overflowed (TIDINGS_SEND_QUEUE_MAX); recover from history",
    ),
    CloseCodeInfo(
        CloseCode.IDLE_TIMEOUT, CloseAction.RECONNECT, "Idle timeout: no inbound message for TIDINGS_IDLE_TIMEOUT"
    ),
    CloseCodeInfo(CloseCode.RATE_LIMITED, CloseAction.PAUSE, "Rate limited too often"),
    CloseCodeInfo(
        CloseCode.TOKEN_EXPIRED,
        CloseAction.REFRESH,
        "The access token expired: reconnect only with a new token, else sign in again",
        sign_in=True,
    ),
    CloseCodeInfo(
        CloseCode.PERMISSIONS_CHANGED,
        CloseAction.RECONNECT,
        "Permissions changed: reconnect to get the subscriptions the user may have now",
    ),
)

#: The table, by code; every :class:`CloseCode` has exactly one row.
CLOSE_CODES: dict[CloseCode, CloseCodeInfo] = {row.code: row for row in _ROWS}

#: Codes not listed above, by range.
CLOSE_RANGES: tuple[CloseRange, ...] = (
    CloseRange(4000, 4499, CloseAction.RECONNECT, "Reserved for Tidings, reconnect class"),
    CloseRange(4500, 4999, CloseAction.TERMINAL, "Application-defined, terminal"),
)

if set(CLOSE_CODES) != set(CloseCode) or len(_ROWS) != len(CLOSE_CODES):  # pragma: no cover - a table typo
    raise RuntimeError("the close-code table must have exactly one row per CloseCode")


def close_info(code: int) -> CloseCodeInfo | CloseRange | None:
    """The table row of ``code``, else the range it falls in, else None."""
    try:
        return CLOSE_CODES[CloseCode(code)]
    except ValueError:
        pass
    for rng in CLOSE_RANGES:
        if rng.first <= code <= rng.last:
            return rng
    return None


def close_action(code: int, reason: str = "") -> CloseAction:
    """What a client does after a close with ``code`` (and ``reason``); unknown codes reconnect."""
    info = close_info(code)
    if info is None:
        return CloseAction.RECONNECT
    if isinstance(info, CloseCodeInfo):
        for match, action in info.reason_actions:
            if reason == match:
                return action
    return info.action


def signs_out(code: int | None, reason: str = "") -> bool:
    """True when a close with ``code``/``reason`` means the user must sign in again."""
    if code is None:
        return False
    info = close_info(code)
    if not isinstance(info, CloseCodeInfo):
        return False
    return info.sign_in or any(reason.startswith(match) for match in info.sign_in_reasons)
