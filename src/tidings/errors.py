"""The one exception root of Tidings, and how the REST side turns hub errors into HTTP answers.

Every exception Tidings raises on purpose derives from :class:`TidingsError`, so an application can catch them
all with one ``except``. The tree (each class lives next to the code that raises it and is re-exported there)::

    TidingsError                        tidings.errors
     +-- BrokerUnavailable              tidings.broker    the broker cannot be reached (HTTP 503, error "unavailable")
     +-- AuthError                      tidings.auth      a token or a password was refused (close 1008 + reason)
     +-- ProtocolError                  tidings.protocol  a client message that cannot be served (an ``error`` reply)
     +-- ConnectionRejected             tidings.node      a WebSocket refused right after the handshake (close code)
     +-- DuplicateUser                  tidings.db        a user with that name exists already
     +-- DispatchError                  tidings.crawler   a crawl job could not be handed to a worker
     +-- TidingsClientError             tidings.client    the Python client's errors
          +-- TerminalError             a terminal close code (e.g. 4003 token expired: sign in again)
          +-- ClientClosed              the client was closed
          +-- RequestError              an ``error`` / ``subscription_error`` reply
          +-- RequestTimeout            no reply in time
          +-- ConnectionLost            the connection dropped after a request was sent
          +-- MessageDropped            the offline queue overflowed

The REST side maps them to HTTP answers in one place: :class:`tidings.api.errors.TidingsRoute`.
This module imports nothing, so every layer (protocol, client, broker) can use it.
"""

from __future__ import annotations

__all__ = ["BrokerUnavailable", "TidingsError"]


class TidingsError(Exception):
    """Root of every exception Tidings raises on purpose (see the module docstring for the tree)."""


class BrokerUnavailable(TidingsError):
    """The broker cannot be reached; publishing fails loudly instead of dropping (HTTP 503)."""
