"""Load a report in headless Chromium and say what a reader would see go wrong.

Speaks the DevTools protocol over ``--remote-debugging-pipe`` (file descriptors 3 and 4), so it needs
no Python package and no TCP port; where it can (root, or user namespaces), Chromium starts inside a
new network namespace (``unshare -n``) with no network at all. Returned: console errors, uncaught
exceptions, failed requests, every request that was not a ``file:`` or ``data:`` URL, the state of
each figure (loaded, natural size), the number of ``<script>`` elements, the page's text, and a PNG
screenshot when asked. :func:`check_report` turns that into the verdict of ``empathy-audit report
--check``: the list of problems a reader would see (:func:`page_problems`).

Example::

    from audit.report.browser import check_page, check_report
    result = check_page("reports/demo/report.html", screenshot="test-artifacts/report.png")
    assert not result.console_errors and not result.failed_requests
    assert check_report("reports/demo/report.html").ok
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    # No network even outside a network namespace: every host resolves to nothing, every proxy is dead.
    "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in CHROMIUM_CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


def _can_unshare_net() -> bool:
    exe = shutil.which("unshare")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@dataclass
class PageCheck:
    url: str
    loaded: bool = False
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    script_elements: int = -1
    title: str = ""
    text: str = ""
    screenshot: str | None = None
    boxes: dict[str, dict[str, float]] = field(default_factory=dict)  # element id -> page rectangle (CSS px)
    network_isolated: bool = False
    log: list[str] = field(default_factory=list)


class _Pipe:
    """A DevTools session over Chromium's debugging pipe: JSON messages separated by NUL bytes."""

    def __init__(self, proc: subprocess.Popen, wfd: int, rfd: int):
        self.proc, self.wfd, self.rfd = proc, wfd, rfd
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.responses: dict[int, dict[str, Any]] = {}
        self.q: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self.rfd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                try:
                    self.q.put(json.loads(msg.decode("utf-8")))
                except ValueError:
                    continue
        self.q.put(None)

    def _pump(self, timeout: float) -> bool:
        try:
            msg = self.q.get(timeout=timeout)
        except queue.Empty:
            return True
        if msg is None:
            return False
        if "id" in msg:
            self.responses[msg["id"]] = msg
        else:
            self.events.append(msg)
        return True

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self.next_id += 1
        mid = self.next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.wfd, json.dumps(msg).encode("utf-8") + b"\0")
        deadline = time.monotonic() + timeout
        while mid not in self.responses:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer to {method} within {timeout:.0f} s")
            if not self._pump(0.2):
                raise RuntimeError(f"chromium closed the debugging pipe during {method}")
        resp = self.responses.pop(mid)
        if "error" in resp:
            raise RuntimeError(f"{method}: {resp['error']}")
        return resp.get("result", {})

    def wait_event(self, method: str, timeout: float, since: int = 0) -> dict[str, Any] | None:
        """The first event ``method`` among those received after the first ``since`` events."""
        deadline = time.monotonic() + timeout
        seen = since
        while time.monotonic() < deadline:
            for ev in self.events[seen:]:
                if ev.get("method") == method:
                    return ev
            seen = len(self.events)
            if not self._pump(0.2):
                return None
        return None

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self._pump(0.1):
                return


_PAGE_STATE_JS = r"""
(() => {
  const imgs = Array.from(document.images).map(i => ({
    id: (i.closest('figure') || {}).id || '', complete: i.complete, width: i.naturalWidth,
    height: i.naturalHeight, src_scheme: (i.getAttribute('src') || '').split(':')[0]}));
  const boxes = {};
  document.querySelectorAll('[id]').forEach(e => { const r = e.getBoundingClientRect();
    boxes[e.id] = {top: r.top + window.scrollY, bottom: r.bottom + window.scrollY, left: r.left, right: r.right}; });
  return JSON.stringify({images: imgs, scripts: document.scripts.length, title: document.title, boxes: boxes,
                         text: document.body ? document.body.innerText : ''});
})()
"""


@dataclass
class _Session:
    """A running headless Chromium with one page attached (see :func:`_chromium`)."""

    cdp: _Pipe
    session: str
    network_isolated: bool
    stderr_lines: list[str]

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict[str, Any]:
        return self.cdp.send(method, params, session=self.session, timeout=timeout)

    def evaluate(self, expression: str) -> Any:
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"].get("value")

    def navigate(self, url: str, timeout: float) -> tuple[bool, int]:
        """Load ``url``; return (loaded, index of the first event of this navigation)."""
        start = len(self.cdp.events)
        self.send("Page.navigate", {"url": url})
        since = start
        for _ in range(3):  # a late load event of about:blank must not count as our page's
            ev = self.cdp.wait_event("Page.loadEventFired", timeout, since=since)
            if ev is None:
                break
            since = self.cdp.events.index(ev) + 1
            if self.evaluate("document.readyState + ' ' + location.href") == f"complete {url}":
                return True, start
        return False, start


@contextlib.contextmanager
def _chromium(exe: str, *, width: int, height: int, timeout: float):
    """Start headless Chromium (no network; inside ``unshare -n`` where possible) with one blank page
    and the Page, Runtime, Log and Network domains on; yield a :class:`_Session`; close it all after."""
    profile = tempfile.mkdtemp(prefix="empathy-audit-chromium-")
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    isolate = _can_unshare_net()
    args = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
    # Hand the pipe ends to Chromium as fds 3 (commands in) and 4 (answers out). Move them above 9
    # first so that the dup2 calls in the child cannot overwrite one with the other.
    import fcntl

    hi_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
    hi_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)

    def _child_fds() -> None:  # runs in the child before exec (and before close_fds)
        os.dup2(hi_r, 3)
        os.dup2(hi_w, 4)

    cmd = (["unshare", "-n"] if isolate else []) + args
    # close_fds=False: Python opens every descriptor non-inheritable (PEP 446), so only 3 and 4 (made
    # inheritable by dup2) and the standard streams reach Chromium.
    proc = subprocess.Popen(cmd, close_fds=False, preexec_fn=_child_fds, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(hi_r)
    os.close(hi_w)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    stderr_lines: list[str] = []
    threading.Thread(target=lambda: stderr_lines.extend(
        ln.decode("utf-8", "replace").rstrip() for ln in proc.stderr), daemon=True).start()
    cdp = _Pipe(proc, to_chrome_w, from_chrome_r)
    try:
        target = cdp.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
        session = cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.send(f"{domain}.enable", session=session)
        cdp.send("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        try:
            yield _Session(cdp, session, isolate, stderr_lines)
        finally:  # also when the caller failed: a Chromium left running would hold the wait below
            try:
                cdp.send("Browser.close", timeout=10)
            except (RuntimeError, TimeoutError, OSError):
                pass
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for fd in (to_chrome_w, from_chrome_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(profile, ignore_errors=True)


def check_page(path: str | Path, screenshot: str | Path | None = None, *, chromium: str | None = None,
               width: int = 1280, height: int = 900, timeout: float = 60.0,
               full_page_max_height: int = 7000, first_screen: bool = False) -> PageCheck:
    """Open ``path`` in headless Chromium (no network) and report what went wrong; see the module doc.

    ``first_screen``: the screenshot is the first ``width`` x ``height`` screen only, not the whole page.
    ``PageCheck.boxes`` holds the page rectangle of every element with an id."""
    exe = chromium or find_chromium()
    if not exe:
        raise FileNotFoundError("no Chromium found (install Debian's chromium, or set CHROMIUM=/path)")
    url = Path(path).resolve().as_uri()
    result = PageCheck(url=url)
    stderr_lines: list[str] = []
    try:
        with _chromium(exe, width=width, height=height, timeout=timeout) as page:
            stderr_lines = page.stderr_lines
            result.network_isolated = page.network_isolated
            result.loaded, start = page.navigate(url, timeout)
            page.cdp.drain(0.5)  # late console messages and failures
            state = json.loads(page.evaluate(_PAGE_STATE_JS))
            result.images = state["images"]
            result.script_elements = state["scripts"]
            result.title = state["title"]
            result.text = state["text"]
            result.boxes = state.get("boxes", {})
            _collect_events(result, page.cdp.events[start:], url)
            if screenshot:
                metrics = page.send("Page.getLayoutMetrics")
                size = metrics.get("cssContentSize") or metrics.get("contentSize")
                h = min(int(size["height"]), height if first_screen else full_page_max_height)
                shot = page.send("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": width, "height": h, "scale": 1}}, timeout=timeout)
                out = Path(screenshot)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(base64.b64decode(shot["data"]))
                result.screenshot = str(out)
    finally:
        result.log = stderr_lines[-30:]
    return result


def _collect_events(result: PageCheck, events: list[dict[str, Any]], url: str) -> None:
    """Console errors, exceptions, failed and external requests of a page load, into ``result``."""
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            result.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                  for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            result.console_errors.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip())
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            result.exceptions.append(d.get("text", "") + " " + str(d.get("exception", {}).get("description", "")))
        elif m == "Network.loadingFailed":
            result.failed_requests.append(f"{p.get('errorText')} ({p.get('blockedReason') or ''}) "
                                          f"{p.get('type', '')} {p.get('requestId')}")
        elif m == "Network.requestWillBeSent":
            u = p.get("request", {}).get("url", "")
            if not (u.startswith("data:") or u == url or u.startswith(url + "#")):
                result.external_requests.append(u)


def page_problems(page: PageCheck) -> list[str]:
    """What a reader of a checked report would see go wrong, one plain line each (empty: nothing).

    A problem is a console error, an uncaught exception, a failed or external request, a page that did
    not finish loading, a figure that did not render (not complete, or zero width) or any ``<script>``
    element (a report has none).

    >>> page_problems(PageCheck(url="file:///r.html", loaded=True, script_elements=0,
    ...                         images=[{"id": "fig-1", "complete": True, "width": 0}]))
    ['figure fig-1 did not render']
    """
    problems = page.console_errors + page.exceptions + page.failed_requests + page.external_requests
    if not page.loaded:
        problems.append("the page did not finish loading")
    problems += [f"figure {i['id']} did not render" for i in page.images if not i["complete"] or not i["width"]]
    if page.script_elements:
        problems.append(f"{page.script_elements} script elements in the page")
    return problems


@dataclass
class ReportCheck:
    """The verdict of :func:`check_report`: the page as Chromium saw it, and its problems."""

    page: PageCheck
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """The verdict in plain lines (what ``empathy-audit report --check`` prints)."""
        if self.problems:
            return [f"  problem: {p}" for p in self.problems]
        return [f"check: loaded in Chromium without network; {len(self.page.images)} figures rendered; "
                "no console errors, failed or external requests"]


def check_report(path: str | Path, *, screenshot: str | Path | None = None) -> ReportCheck:
    """Open the report ``path`` in headless Chromium without network and judge it (:func:`page_problems`).

    Raises :class:`~audit.errors.AuditError` when no Chromium is installed.
    """
    from ..errors import AuditError

    if not find_chromium():
        raise AuditError("no Chromium found for --check", fix="install chromium, or set CHROMIUM=/path/to/it")
    page = check_page(path, screenshot)
    return ReportCheck(page, page_problems(page))
