"""The listening page in a real browser (Playwright driving Debian's chromium): two raters at once, every click in
the store, a killed server that loses nothing and resumes each rater, and no file reachable but registered clips."""

import http.client
import json
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from demo.listening_clips import SENTENCES, speak
from llasa.audio import write_wav

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs chromium (apt-get install chromium)"),
]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parent.parent
N_TEXTS = 5
WAIT_MS = 15_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python listen.py serve` in its own process, as a user starts it."""

    def __init__(self, db: Path, port: int, systems: list[str]):
        self.db, self.port, self.systems = db, port, systems
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, register: bool = True) -> None:
        command = [sys.executable, "listen.py", "serve", "--db", str(self.db), "--port", str(self.port)]
        self.process = subprocess.Popen(command + (["--pairs", *self.systems] if register else []), cwd=REPO)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/", timeout=1).read()
                return
            except OSError:
                assert self.process.poll() is None, "the server exited at start-up"
                time.sleep(0.1)
        raise TimeoutError("the listening server did not answer within 30 s")

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no chance to flush anything
        self.process.wait()


@pytest.fixture
def server(tmp_path, espeak):
    systems = []
    for name, voice in (("base", "en-us"), ("grpo", "en+f3")):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(N_TEXTS):
            write_wav(folder / f"{i}.wav", speak(SENTENCES[i], voice), 16000)
        (folder / "metadata.csv").write_text(
            "file_name,text\n" + "".join(f"{i}.wav,{SENTENCES[i]}\n" for i in range(N_TEXTS))
        )
        systems.append(f"{name}={folder}")
    server = Server(tmp_path / "ratings.sqlite", _free_port(), systems)
    server.start()
    yield server
    if server.process.poll() is None:
        server.kill()


def _stored(db: Path, rater: str) -> set[tuple]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT pair_id, shown_a, shown_b, choice, tags FROM judgments WHERE rater = ? AND kind = 'human'",
            (rater,),
        ).fetchall()
    return {(pair_id, a, b, choice, tuple(json.loads(tags))) for pair_id, a, b, choice, tags in rows}


def _on_screen(page) -> tuple[int, str, str]:
    page.wait_for_function("document.getElementById('test').dataset.pairId !== ''", timeout=WAIT_MS)
    pair_id = int(page.get_attribute("#test", "data-pair-id"))
    a, b = (page.get_attribute(f"#audio-{side}", "src").rsplit("/", 1)[1] for side in ("a", "b"))
    return pair_id, a, b


def _judge(page, choice: str, tags: tuple[str, ...] = (), keyboard: bool = False, wait: bool = True) -> tuple:
    """Listen to both clips and choose, with the keyboard shortcuts or the mouse; wait until the page moves on."""
    pair_id, a, b = _on_screen(page)
    keys = {"pronunciation": "p", "prosody": "r", "voice": "v", "noise": "n"}
    if keyboard:
        for key in ("1", "2", *(keys[tag] for tag in tags), {"a": "a", "b": "b", "same": "s"}[choice]):
            page.keyboard.press(key)
    else:
        page.click("#play-a")
        page.click("#play-b")
        for tag in tags:
            page.click(f"#tag-{tag}")
        page.click(f"#choose-{choice}")
    if wait:
        page.wait_for_function(f"document.getElementById('test').dataset.pairId !== '{pair_id}'", timeout=WAIT_MS)
    return pair_id, a, b, choice, tuple(tag for tag in keys if tag in tags)


def test_two_raters_a_killed_server_and_refused_paths(server):
    # Two raters rate at once (one by keyboard, one by mouse); each click is a row; the server is killed with
    # SIGKILL mid-session, a click made while it is down is kept by the page and saved after the restart, each
    # rater resumes with the pairs they have not judged, and both finish. System names never reach the page.
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    clicks = {"alice": set(), "bob": set()}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        alice = browser.new_context().new_page()
        bob = browser.new_context().new_page()
        alice.goto(server.url + "/?rater=alice")
        bob.goto(server.url + "/")
        bob.fill("#rater-name", "bob")
        bob.click("#start")

        # The clips load in the browser: the <audio> elements know their durations.
        _on_screen(alice)
        alice.wait_for_function("document.getElementById('audio-a').duration > 0", timeout=WAIT_MS)
        assert "base" not in alice.content() and "grpo" not in alice.content()

        clicks["alice"].add(_judge(alice, "a", ("noise",), keyboard=True))
        clicks["bob"].add(_judge(bob, "b", ("prosody", "voice")))
        clicks["alice"].add(_judge(alice, "same", keyboard=True))
        clicks["bob"].add(_judge(bob, "a"))
        assert alice.inner_text("#progress") == f"2 / {N_TEXTS} judged"
        assert _stored(server.db, "alice") == clicks["alice"] and _stored(server.db, "bob") == clicks["bob"]

        server.kill()
        pending = _judge(alice, "b", ("pronunciation",), keyboard=True, wait=False)
        alice.wait_for_selector("#status.error", timeout=WAIT_MS)  # "Not saved yet ...: retrying"
        assert _stored(server.db, "alice") == clicks["alice"]  # nothing committed was lost, nothing invented
        server.start(register=False)
        alice.wait_for_function(f"document.getElementById('test').dataset.pairId !== '{pending[0]}'", timeout=WAIT_MS)
        clicks["alice"].add(pending)
        bob.reload()
        bob.wait_for_function(f"document.getElementById('progress').textContent === '2 / {N_TEXTS} judged'")
        assert _on_screen(bob)[0] not in {click[0] for click in clicks["bob"]}

        while len(clicks["alice"]) < N_TEXTS or len(clicks["bob"]) < N_TEXTS:
            if len(clicks["alice"]) < N_TEXTS:
                clicks["alice"].add(_judge(alice, "a", keyboard=True))
            if len(clicks["bob"]) < N_TEXTS:
                clicks["bob"].add(_judge(bob, "same", ("noise",)))
        for page in (alice, bob):
            page.wait_for_selector("#done", state="visible", timeout=WAIT_MS)
            assert page.inner_text("#progress") == f"{N_TEXTS} / {N_TEXTS} judged"
        browser.close()

    for rater in ("alice", "bob"):
        assert _stored(server.db, rater) == clicks[rater]
        assert sorted(click[0] for click in clicks[rater]) == list(range(1, N_TEXTS + 1))

    # Only registered clips are served: unknown ids, traversal and other paths are refused.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for path in ("/clips/AAAAAAAAAAAAAAAA", "/clips/..%2F..%2Fetc%2Fpasswd", "/clips/../../etc/passwd", "/etc/passwd"):
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        assert response.status in (403, 404), path
    assert time.monotonic() - started < 60
