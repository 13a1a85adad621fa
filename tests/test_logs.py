"""Log lines: the seed's JSON fields, a text form for terminals, and keys never written."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from chrono.logs import configure_logging

SECRET = "chrono_admin_secret_value_42"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_seed_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="info", fmt="json", secrets=[SECRET])
    log = logging.getLogger("chrono.test")
    log.info("feeds %s", 3, extra={"worker_id": "coinbase-1", "data": {"n": 3}})
    log.debug("not shown at info")
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["level"] == "info"
    assert record["worker_id"] == "coinbase-1"
    assert record["message"] == "feeds 3"
    assert record["data"] == {"n": 3}
    assert record["timestamp"].endswith("+00:00")


@pytest.mark.usefixtures("restore_logging")
def test_keys_are_redacted_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="debug", fmt="json", secrets=[SECRET])
    log = logging.getLogger("chrono.test")
    log.warning("key %s rejected", SECRET, extra={"data": {"header": f"Bearer {SECRET}"}})
    err = capsys.readouterr().err
    assert SECRET not in err
    record = json.loads(err)
    assert record["message"] == "key *** rejected"
    assert record["data"] == {"header": "Bearer ***"}


@pytest.mark.usefixtures("restore_logging")
def test_text_format_for_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="warn", fmt="text", secrets=[SECRET])
    logging.getLogger("chrono.test").info("hidden")
    logging.getLogger("chrono.test").warning("shown %s", SECRET, extra={"data": {"x": 1}})
    err = capsys.readouterr().err
    assert "hidden" not in err
    assert "WARNING chrono.test: shown ***" in err
    assert err.rstrip().endswith('{"x":1}')
