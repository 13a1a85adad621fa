"""The one exception tree of Chrono.

Library errors (websockets, OSError, sqlite3, psycopg, msgspec) are translated into these at
each boundary, with ``raise ... from exc``, so callers catch Chrono's names only::

    ChronoError
    ├── ConfigError          bad config: names the key path and the problem (exit 2)
    ├── InvalidFrame         an exchange frame that cannot be turned into feeds (counted, skipped)
    ├── InvalidFeed          a feed that fails validation (counted, skipped)
    ├── FeedConnectionError  an exchange connection failed, closed or went silent (reconnect)
    │   └── FeedSilent       no data frame within the silence timeout
    ├── StoreError           the store could not be opened, written or read (spool, retry)
    ├── SpoolError           the spool folder could not be written or read (retry)
    ├── SupervisorGaveUp     a child crashed past its restart budget (the process exits 1)
    ├── Unrecoverable        a failure no restart can mend, e.g. a port in use (exits 1 at once)
    │   └── SchemaTooNew     the store's schema is newer than this code
    └── DaemonUnreachable    `chrono status` could not reach the running service
"""

from __future__ import annotations


class ChronoError(Exception):
    """Base of every error Chrono raises on purpose."""


class ConfigError(ChronoError):
    """The config file is missing, unreadable or invalid; the message names the key."""


class InvalidFrame(ChronoError):
    """An exchange frame is malformed; ``reason`` is a short, countable label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InvalidFeed(ChronoError):
    """A feed failed validation; ``reason`` is a short, countable label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class FeedConnectionError(ChronoError):
    """The exchange connection could not be opened or was lost.

    ``retry_after_s`` is set when the exchange refused the handshake with ``Retry-After``
    (HTTP 429/503): the next attempt waits at least that long.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of a refused handshake
        self.retry_after_s = retry_after_s


class FeedSilent(FeedConnectionError):
    """The connection stayed open but delivered no data frame in time."""


class StoreError(ChronoError):
    """The store failed; the batch that raised it is still held by the writer."""


class BatchRefused(ChronoError):
    """The store refused a batch for what it holds (a central Chrono's 4xx): retrying the same
    feeds cannot help, so the writer logs it and goes on (the seed's forwarding policy)."""


class SpoolError(ChronoError):
    """The spool could not write or read a batch; the batch is still held by the writer."""


class SupervisorGaveUp(ChronoError):
    """A supervised child crashed more often than its restart budget allows."""


class Unrecoverable(ChronoError):
    """Restarting would fail the same way: the supervisor passes it on instead of retrying."""


class SchemaTooNew(Unrecoverable):
    """The store was migrated by a newer Chrono: writing to it could corrupt what it expects."""


class DaemonUnreachable(ChronoError):
    """The running Chrono service did not answer."""
