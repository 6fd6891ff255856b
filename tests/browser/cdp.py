"""A minimal headless-chromium driver over the Chrome DevTools Protocol, standard library only.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol messages (JSON, each ended by a NUL
byte) on file descriptor 3 and writes on 4. That needs no websocket package, no port and no chromedriver. A
reader thread collects every message; ``call`` sends a command and waits for its answer, and protocol events
(console messages, exceptions, page loads) are kept in ``events`` for the test to inspect.

Example::

    with Chromium.launch(tmp_path / "profile") as browser:
        page = browser.new_page()
        browser.navigate(page, "file:///tmp/report.html")
        browser.evaluate(page, "document.title")
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe")
WINDOW = (1400, 1800)  # px; the screenshot shows the plots and the top of the tree viewer
TIMEOUT_S = 30.0  # per protocol call; generous, the CI machine may be busy
# Chromium expects the pipe on fds 3 and 4; this exec trampoline moves it there from wherever os.pipe put it
# (via fds >= 10 first, so neither lands on the other; /bin/sh cannot, dash only knows fds 0-9).
_TRAMPOLINE = ("import fcntl, os, sys; fds = [fcntl.fcntl(int(a), fcntl.F_DUPFD, 10) for a in sys.argv[1:3]]; "
               "os.dup2(fds[0], 3); os.dup2(fds[1], 4); [os.close(f) for f in fds]; os.execv(sys.argv[3], sys.argv[3:])")


def find_chromium() -> str | None:
    """Path of a chromium binary on PATH (or Debian's /usr/bin/chromium), or None."""
    for name in CANDIDATES:
        if path := shutil.which(name):
            return path
    return None


@dataclass
class Chromium:
    proc: subprocess.Popen
    write_fd: int
    read_fd: int
    events: list[dict] = field(default_factory=list)
    _answers: queue.Queue = field(default_factory=queue.Queue)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def launch(cls, user_data_dir: Path, binary: str | None = None) -> Chromium:
        binary = binary or find_chromium()
        if binary is None:
            raise FileNotFoundError("no chromium binary found")
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        args = [binary, *FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "about:blank"]
        proc = subprocess.Popen([sys.executable, "-c", _TRAMPOLINE, str(to_browser_r), str(from_browser_w), *args],
                                pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        browser = cls(proc, to_browser_w, from_browser_r)
        threading.Thread(target=browser._read, daemon=True).start()
        return browser

    def _read(self) -> None:
        buf = b""
        while chunk := os.read(self.read_fd, 1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                (self._answers.put(msg) if "id" in msg else self.events.append(msg))
        self._answers.put({"id": None, "error": {"message": "browser closed the pipe"}})

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its ``result``; a protocol error raises ``RuntimeError``."""
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            answer = self._answers.get(timeout=max(0.0, deadline - time.monotonic()))
            if answer["id"] in (msg_id, None):
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def new_page(self) -> str:
        """Open a tab and attach to it; returns the session id the page commands go to."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        return session

    def navigate(self, session: str, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        seen = len(self.events)
        self.call("Page.navigate", {"url": url}, session)
        self.wait_for(lambda e: e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session, seen)

    def wait_for(self, match: Any, start: int = 0) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            for event in self.events[start:]:
                if match(event):
                    return event
            time.sleep(0.02)
        raise TimeoutError("event not seen")

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, session: str, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the first element matching ``selector``."""
        box = self.evaluate(session, f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                                     "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                                     "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1}, session)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(params["entry"]["text"])
        return out

    def screenshot(self, session: str, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, queue.Empty, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.write_fd)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
