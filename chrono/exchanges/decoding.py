"""What every adapter needs to turn wire data into Chrono's types, with errors translated once.

msgspec's errors become ``InvalidFrame`` here: ``malformed`` (not JSON, bad UTF-8, lone
surrogates) or ``schema`` (JSON of the wrong shape). Epoch numbers become aware UTC datetimes
by integer arithmetic (``fromtimestamp`` goes through a float and can round a millisecond).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Final, TypeVar

import msgspec

from chrono.errors import InvalidFrame

T = TypeVar("T")

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MS_US: Final = 1_000
SECOND_US: Final = 1_000_000

NULL: Final = msgspec.Raw(b"null")
"""The default of an optional ``msgspec.Raw`` field: decodes as ``None``."""

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""An RFC 3339 time with its offset: msgspec refuses one without, so a naive time is a
``schema`` error, not a feed."""

# What adapters type their ``msgspec.Raw`` fields with (``decode`` with ``at``).
DECIMAL: Final = msgspec.json.Decoder(Decimal)
OPTIONAL_DECIMAL: Final = msgspec.json.Decoder(Decimal | None)
OPTIONAL_TIME: Final = msgspec.json.Decoder(AwareDatetime | None)


def decode(
    decoder: msgspec.json.Decoder[T], data: str | bytes | msgspec.Raw, at: str | None = None
) -> T:
    """``decoder.decode(data)``; raises ``InvalidFrame`` ("schema" or "malformed").

    ``at`` names a ``msgspec.Raw`` field being typed, for the message. A field kept raw is
    typed from the last of its keys only, where a typed field checks every one (JSON lets a
    key repeat): how a fast path reading it as text sees it too.
    """
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidFrame("schema", str(exc) if at is None else f"{exc} - at `$.{at}`") from exc
    except (msgspec.DecodeError, UnicodeError) as exc:  # bad JSON, bad UTF-8, lone surrogates
        raise InvalidFrame("malformed") from exc


def decode_or_classify(
    decoder: msgspec.json.Decoder[T],
    frame: str | bytes,
    unknown_kind: Callable[[str | bytes], str | None],
) -> T:
    """``decode``, telling a message kind the protocol lacks from a known one of a bad shape.

    msgspec stops at a tag it does not know before reading the rest, so a failed decode is
    looked at again: ``unknown_kind(frame)`` names the kind when it is not one of the
    protocol's (``unknown_type``), or returns ``None`` (``schema``); a ``ValidationError``
    from it means the frame has no recognisable kind at all (``schema``).
    """
    try:
        return decoder.decode(frame)
    except msgspec.ValidationError as exc:
        try:
            kind = unknown_kind(frame)
        except msgspec.ValidationError:
            kind = None
        except (msgspec.DecodeError, UnicodeError):
            raise InvalidFrame("malformed") from exc
        if kind is None:
            raise InvalidFrame("schema", str(exc)) from exc
        raise InvalidFrame("unknown_type", kind) from exc
    except (msgspec.DecodeError, UnicodeError) as exc:  # bad JSON, bad UTF-8, lone surrogates
        raise InvalidFrame("malformed") from exc


def from_epoch(value: int, unit_us: int) -> datetime:
    """``value`` units of ``unit_us`` microseconds since the epoch, exactly, in UTC."""
    try:
        return EPOCH + timedelta(microseconds=value * unit_us)
    except OverflowError as exc:  # past year 9999
        raise InvalidFrame("schema", f"time out of range: {value}") from exc


def as_utc(time: datetime) -> datetime:
    """An aware time in UTC (exchanges send ``Z``; any other offset is converted)."""
    if time.tzinfo is UTC:
        return time
    try:
        return time.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00
        raise InvalidFrame("schema", f"time out of range: {time.isoformat()}") from exc
