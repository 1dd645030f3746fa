"""A minimal W3C WebDriver client over urllib, for driving Debian's chromium + chromedriver
in tests without a Selenium dependency. Only the few endpoints the tests use."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
ARROW_LEFT, ARROW_RIGHT = "\ue012", "\ue014"

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One browser session on a running chromedriver at `driver_url`."""

    def __init__(self, driver_url: str, chromium: str, user_data_dir: Path, window: tuple[int, int] = (1280, 1500)):
        self.driver_url = driver_url.rstrip("/")
        args = CHROMIUM_FLAGS + [f"--user-data-dir={user_data_dir}", f"--window-size={window[0]},{window[1]}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": chromium, "args": args}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(self.driver_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as err:
            raise WebDriverError(f"{method} {path}: {err.code} {err.read()[:500]!r}") from None

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def get(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    def url(self) -> str:
        return self._call("GET", self._s("/url"))

    def find_all(self, css: str) -> list[str]:
        found = self._call("POST", self._s("/elements"), {"using": "css selector", "value": css})
        return [e[ELEMENT] for e in found]

    def find(self, css: str) -> str:
        return self._call("POST", self._s("/element"), {"using": "css selector", "value": css})[ELEMENT]

    def prop(self, element: str, name: str):
        return self._call("GET", self._s(f"/element/{element}/property/{name}"))

    def attr(self, element: str, name: str):
        return self._call("GET", self._s(f"/element/{element}/attribute/{name}"))

    def text(self, element: str) -> str:
        return self._call("GET", self._s(f"/element/{element}/text"))

    def send_keys(self, element: str, keys: str) -> None:
        self._call("POST", self._s(f"/element/{element}/value"), {"text": keys})

    def click(self, element: str) -> None:
        self._call("POST", self._s(f"/element/{element}/click"), {})

    def script(self, source: str, *args):
        return self._call("POST", self._s("/execute/sync"), {"script": source, "args": list(args)})

    def screenshot_png(self) -> bytes:
        return base64.b64decode(self._call("GET", self._s("/screenshot")))

    def wait_until(self, source: str, timeout: float = 30.0):
        """Poll a script until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.script(source)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied: {source}")
            time.sleep(0.1)

    def quit(self) -> None:
        try:
            self._call("DELETE", self._s(""))
        except (WebDriverError, OSError):
            pass


def start_chromedriver(chromedriver: str, port: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")
    try:
        return subprocess.Popen([chromedriver, f"--port={port}", "--allowed-ips=127.0.0.1"],
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()  # the child keeps its own descriptor
