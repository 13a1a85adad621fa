"""Alert webhooks: every event POSTed as JSON to every ``[alerts] webhooks`` URL, in order.

A 2xx is delivered; a 4xx is the receiver refusing that body, logged and not retried; a 5xx,
a timeout or a refused connection is retried with capped, jittered backoff up to
``webhook_retries`` times, then logged and given up, so one dead receiver delays the next
events but never stops the alert engine (it queues them, bounded: ``WEBHOOK_QUEUE``).
"""

from __future__ import annotations

import logging

import httpx
import msgspec
import trio

from chrono.alerts.engine import Alerts
from chrono.backoff import Backoff

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode


async def post_events(alerts: Alerts) -> None:
    """Until cancelled: each event the engine hands on, to every webhook."""
    config = alerts.config
    async with httpx.AsyncClient(timeout=config.webhook_timeout_s) as client:
        while True:
            event = await alerts.next_for_webhooks()
            body = _encode(event)
            for url in config.webhooks:
                if await _post(client, url, body, config.webhook_retries):
                    alerts.webhook_posts += 1
                else:
                    alerts.webhook_failures += 1


async def _post(client: httpx.AsyncClient, url: str, body: bytes, retries: int) -> bool:
    backoff = Backoff(initial_s=0.5, cap_s=30.0)
    headers = {"Content-Type": "application/json"}
    for attempt in range(retries + 1):
        try:
            answer = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if answer.is_success:
                return True
            problem = f"HTTP {answer.status_code}"
            if answer.is_client_error:
                log.warning("alert webhook %s refused an event: %s", _safe(url), problem)
                return False
        if attempt < retries:
            await trio.sleep(backoff.next_delay())
    log.warning("alert webhook %s: gave up after %d tries: %s", _safe(url), retries + 1, problem)
    return False


def _safe(url: str) -> str:
    """The URL without its path and query, which may hold a token (Slack's do)."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}{f':{parsed.port}' if parsed.port else ''}/..."
