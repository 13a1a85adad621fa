"""A real headless Chromium, driven over the DevTools protocol (CDP) on a WebSocket: enough to
open a page, read it with JavaScript, collect its console errors and take a screenshot.

Chromium prints ``DevTools listening on ws://...`` on stderr; commands are JSON ``{id, method,
params, sessionId}``, answered by ``id``; events (console, exceptions) come between them.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from websockets.trio.client import ClientConnection, connect


def chromium() -> str:
    """Chromium's binary (scripts/ensure-chromium installs it): never a skip."""
    found = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    assert found, "chromium missing: run scripts/ensure-chromium"
    return found


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    async def call(self, method: str, **params: Any) -> Any:
        return await self.browser.call(method, session=self.session, **params)

    async def evaluate(self, expression: str) -> Any:
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        await trio.Path(path).write_bytes(base64.b64decode(shot["data"]))


class Browser:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._answers: dict[int, Any] = {}
        self._arrived = trio.Event()
        self.errors: list[str] = []  # console errors, uncaught exceptions, failed loads
        self.loaded: dict[str, trio.Event] = {}  # per session: set at its page's load event

    async def read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message:
                self._answers[message["id"]] = message
                self._arrived.set()
            else:
                self._event(message["method"], message.get("params", {}), message.get("sessionId"))

    def _event(self, method: str, params: dict[str, Any], session: str | None) -> None:
        if method == "Page.loadEventFired" and session in self.loaded:
            self.loaded[session].set()
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or str(details))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a)) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry']['text']} ({params['entry'].get('url', '')})")

    async def call(self, method: str, *, session: str | None = None, **params: Any) -> Any:
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        while number not in self._answers:
            self._arrived = trio.Event()
            await self._arrived.wait()
        answer = self._answers.pop(number)
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        return answer["result"]

    async def open(self, url: str) -> Page:
        target = await self.call("Target.createTarget", url="about:blank")
        attached = await self.call("Target.attachToTarget", targetId=target["targetId"],
                                   flatten=True)  # fmt: skip
        page = Page(self, attached["sessionId"])
        loaded = self.loaded[page.session] = trio.Event()
        for domain in ("Runtime", "Log", "Page"):
            await page.call(f"{domain}.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                        deviceScaleFactor=1, mobile=False)  # fmt: skip
        await page.call("Page.navigate", url=url)
        await loaded.wait()  # navigate answers before the page is there
        return page


@asynccontextmanager
async def open_browser(profile: Path) -> AsyncIterator[Browser]:
    """A fresh headless Chromium (its profile in ``profile``), killed after."""
    process = await trio.lowlevel.open_process(
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "about:blank"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        seen = b""
        with trio.fail_after(30):
            while b"DevTools listening on " not in seen or not seen.endswith(b"\n"):
                chunk = await process.stderr.receive_some(65536)
                assert chunk, f"chromium exited: {seen.decode(errors='replace')}"
                seen += chunk
        url = seen.split(b"DevTools listening on ")[1].split()[0].decode()
        async with connect(url, max_size=None) as ws, trio.open_nursery() as nursery:
            browser = Browser(ws)
            nursery.start_soon(browser.read)
            nursery.start_soon(_drain, process.stderr)
            yield browser
            nursery.cancel_scope.cancel()
    finally:
        process.kill()
        await process.wait()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(65536):
        pass
