"""Open a local HTML file in headless Chromium and report what went wrong, through the DevTools protocol.

Chromium talks the protocol over a pipe (`--remote-debugging-pipe`: commands in on fd 3, replies and events out on
fd 4, each a JSON object ending in a NUL byte), so no port, websocket library or network is needed. A page is
clean when it logged no console error, threw no uncaught exception, requested nothing but itself and `data:`
URIs, and every <img> decoded (`naturalWidth > 0`: a broken data URI raises no console message, so the DOM is
asked).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome", "chrome")
TEXT = "document.body ? document.body.innerText : ''"
IMAGES = (
    "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src.slice(0, 60))"
)


def find_browser() -> str | None:
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


class Pipe:
    """One DevTools session over Chromium's pipe: send commands, collect every event."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self.proc, self.out, self.inp = proc, os.fdopen(to_browser, "wb"), os.fdopen(from_browser, "rb")
        self.next_id, self.events, self.buffer = 0, [], b""

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.inp.fileno(), 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe (exit {self.proc.poll()})")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self.next_id += 1
        command = {
            "id": self.next_id,
            "method": method,
            "params": params,
            **({"sessionId": session} if session else {}),
        }
        self.out.write(json.dumps(command).encode() + b"\0")
        self.out.flush()
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline))


def problems(events: list[dict], page_url: str) -> list[str]:
    """Console errors, uncaught exceptions, error log entries and requests other than the page and data: URIs."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            found.append(
                "console error: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            found.append(f"exception: {details.get('exception', {}).get('description', details.get('text'))}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"log error: {params['entry']['text']} {params['entry'].get('url', '')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if url != page_url and not url.startswith("data:"):
                found.append(f"request: {url}")
    return found


@contextlib.contextmanager
def browser_session(browser: str) -> Iterator[tuple[Pipe, str]]:
    """A headless Chromium with one blank tab, its Runtime, Log, Network and Page events on: the pipe and the tab's
    session. Closed (killed if it must be) on the way out."""
    to_browser_r, to_browser_w = map(_above_4, os.pipe())
    from_browser_r, from_browser_w = map(_above_4, os.pipe())
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe"]
    # bash (dash takes one-digit descriptors only) puts the pipe's ends on fds 3 and 4, where Chromium looks for them.
    wire = f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            ["bash", "-c", wire, "bash", browser, *flags, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(to_browser_r, from_browser_w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        pipe = Pipe(proc, to_browser_w, from_browser_r)
        try:
            target = pipe.send("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                pipe.send(f"{domain}.enable", session)
            yield pipe, session
            with contextlib.suppress(RuntimeError):  # it may close the pipe before it answers
                pipe.send("Browser.close")
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            pipe.out.close()
            pipe.inp.close()


def check_page(html: Path, browser: str, settle_s: float = 1.0) -> list[str]:
    """What went wrong opening `html` (an empty list when nothing did)."""
    page_url = html.resolve().as_uri()
    with browser_session(browser) as (pipe, session):
        pipe.send("Page.navigate", session, url=page_url)
        pipe.wait_for("Page.loadEventFired", timeout=60)
        time.sleep(settle_s)
        broken = pipe.send("Runtime.evaluate", session, expression=IMAGES, returnByValue=True)["result"]["value"]
    return problems(pipe.events, page_url) + [f"broken image: {b}" for b in broken]


def page_text(url: str, browser: str, until: str, timeout_s: float = 90) -> str:
    """The visible text of the page at `url` once it shows `until` (an app that renders after loading, such as
    MLflow's UI), or when time runs out."""
    with browser_session(browser) as (pipe, session):
        pipe.send("Page.navigate", session, url=url)
        deadline = time.monotonic() + timeout_s
        while True:
            # A renderer busy parsing the app's scripts answers late under load: wait up to the page's own deadline.
            wait = max(deadline - time.monotonic(), 30)
            shown = pipe.send("Runtime.evaluate", session, timeout=wait, expression=TEXT, returnByValue=True)
            shown = shown["result"]["value"]
            if until in shown or time.monotonic() > deadline:
                return shown
            time.sleep(0.5)


def _above_4(fd: int) -> int:
    """`fd` moved above 4, so that putting the pipe's ends on 3 and 4 cannot overwrite one with the other."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


EXTERNAL = [
    (re.compile(r"<link\b", re.I), "a <link> element"),
    (re.compile(r"<script\b[^>]*\bsrc\s*=", re.I), "a script loaded from elsewhere"),
    (re.compile(r"\bsrc\s*=\s*(?![\"']?data:)", re.I), "a src that is not a data: URI"),
    (re.compile(r"\bhref\s*=\s*(?![\"']?#)", re.I), "a link out of the page"),
    (re.compile(r"@import|url\(\s*(?![\"']?data:)", re.I), "a style sheet fetching something"),
]


def external_references(html: str) -> list[str]:
    """What in `html` would make a browser fetch something (text shown on the page, such as a URL in a table
    cell, is not a reference)."""
    return [f"{what}: {m.group(0)!r} at {m.start()}" for pattern, what in EXTERNAL for m in pattern.finditer(html)]
