"""The retriever client against servers that misbehave (real HTTP servers on 127.0.0.1): a total deadline, a size
cap on the decoded reply, and a reply that breaks the /retrieve contract is an error, never used."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from zerosearch_core.search.base import SearchBackendError
from zerosearch_core.search.http import HttpSearchEngine, post_json

pytestmark = pytest.mark.reliability

BOMB = gzip.compress(b" " * (80 << 20))  # 80 MiB of spaces in about 80 KB


def _documents(count: int) -> list[dict[str, object]]:
    return [{"document": {"id": str(i), "contents": f'"T{i}"\ntext {i}'}, "score": 1.0} for i in range(count)]


class Misbehaving(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/drip/retrieve":  # one byte every 0.4 s, each read well within the read timeout
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.4)
            return
        if self.path == "/bomb/retrieve":
            body, extra = BOMB, {"Content-Encoding": "gzip"}
        elif self.path == "/ignores-topk/retrieve":
            body, extra = json.dumps({"result": [_documents(20) for _ in request["queries"]]}).encode(), {}
        elif self.path == "/drops-a-query/retrieve":
            body, extra = json.dumps({"result": [_documents(1)]}).encode(), {}
        else:  # wrong shape
            body, extra = json.dumps({"result": [["not a document"]]}).encode(), {}
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_server_that_drips_bytes_is_cut_off_at_the_total_deadline(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(requests.Timeout, match="within 2.0s"):
        post_json(f"{server}/drip/retrieve", {"queries": ["q"]}, timeout_s=2.0)
    assert time.monotonic() - started < 4.0  # each read came within 0.4 s; the whole exchange is what is bounded
    engine = HttpSearchEngine(f"{server}/drip", timeout_s=1.0, max_retries=1)
    started = time.monotonic()
    with pytest.raises(SearchBackendError, match="2 attempts"):
        engine.retrieve(["q"], 3)
    assert time.monotonic() - started < 5.0  # two attempts of 1 s and a 0.5 s backoff


def test_a_compressed_reply_is_refused_once_it_grows_past_the_cap(server: str) -> None:
    with pytest.raises(ValueError, match="over 1048576 bytes"):
        post_json(f"{server}/bomb/retrieve", {"queries": ["q"]}, timeout_s=30.0, max_bytes=1 << 20)
    with pytest.raises(ValueError, match="over"):  # the default cap (64 MiB) too
        post_json(f"{server}/bomb/retrieve", {"queries": ["q"]}, timeout_s=30.0)


@pytest.mark.parametrize(
    ("route", "match"),
    [("ignores-topk", "broke its contract"), ("drops-a-query", "broke its contract"), ("shape", "unexpected shape")],
)
def test_a_reply_that_breaks_the_contract_is_an_error_not_used(server: str, route: str, match: str) -> None:
    engine = HttpSearchEngine(f"{server}/{route}", timeout_s=5.0, max_retries=0)
    with pytest.raises(SearchBackendError, match=match):
        engine.retrieve(["q1", "q2"], 3)
