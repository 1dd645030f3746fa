"""`bas rate serve` as a real process: loopback binding, and every acknowledged rating
surviving a SIGKILL of the server."""

import re
import signal
import sqlite3
import subprocess
import urllib.error
import urllib.parse
import urllib.request

from ratings_helpers import REPO, bas_command, bas_env


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _post(url: str, data: dict) -> tuple[int, str]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, urllib.parse.urlencode(data).encode()), timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def test_ratings_survive_a_killed_server(storage_root, live_server):
    invite = subprocess.run(bas_command(storage_root, "rate", "invite", "--run", str(storage_root), "--n", "1"),
                            cwd=REPO, env=bas_env(), capture_output=True, text=True, check=True)
    token = invite.stdout.split("/r/")[1].strip()
    base, proc = live_server(storage_root)
    stored = {}
    for task in ("prompt", "identity"):
        page = _get(f"{base}/r/{token}/{task}")
        question = re.search(r'name="question" value="([0-9a-f]+)"', page).group(1)
        items = re.findall(r'name="rating_([0-9a-f]+)"', page)
        values = {it: str(v) for it, v in zip(items, (5, 2, 4))}
        status, _ = _post(f"{base}/r/{token}/{task}", {"question": question, **{f"rating_{k}": v for k, v in values.items()}})
        assert status == 303
        stored.update(values)
    status, body = _post(f"{base}/r/{token}/prompt", {"question": "0" * 16})
    assert status == 404 and "Unknown question" in body

    proc.send_signal(signal.SIGKILL)  # no shutdown, no checkpoint: only what was committed
    assert proc.wait(timeout=30) == -signal.SIGKILL

    with sqlite3.connect(storage_root / "ratings.sqlite") as conn:
        rows = dict(conn.execute("SELECT i.public_id, r.rating FROM ratings r JOIN items i ON i.id = r.item_id"))
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {k: str(v) for k, v in rows.items()} == stored


def test_server_binds_loopback_by_default(storage_root, live_server):
    base, proc = live_server(storage_root)
    assert base.startswith("http://127.0.0.1:")
    # The listening socket on that port is bound to 127.0.0.1 only (Linux: /proc/net/tcp,
    # local address as little-endian hex; state 0A = LISTEN).
    port = int(base.rsplit(":", 1)[1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                listening.append(address)
    assert listening == ["0100007F"]
    assert "image rating study" in _get(base + "/")
