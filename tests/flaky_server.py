"""A small real OpenAI-style embeddings server that fails on purpose, for the remote client's tests.

Run as ``python flaky_server.py PORT``; it listens on 127.0.0.1. The path says how to misbehave:
``/TAG/RULE/v1/embeddings``, where RULE is one of

- ``ok``: answer at once;
- ``503x2``, ``429x1`` ...: answer that status (with an OpenAI error body) to the first N tries of each
  distinct body, then 200; ``...ra1`` adds ``Retry-After: 1``;
- ``dropx1``: close the connection without an answer on the first N tries, then 200;
- ``sleep2``: answer after that many seconds.

Vectors are 8 floats from the SHA-256 of each text, so a client's rows can be checked against the
texts it sent. ``GET /TAG/RULE/v1/models`` answers at once; ``GET /log/TAG`` lists every embeddings
try of TAG as ``[monotonic seconds, what was answered]``: how tests see retries and their spacing.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "flaky-model"
DIMENSION = 8

tries: Counter[tuple[str, str, bytes]] = Counter()
log: defaultdict[str, list[tuple[float, str]]] = defaultdict(list)
lock = threading.Lock()


def vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [value / 2**31 for value in struct.unpack("<8i", digest)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def send_json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_json(200, {"status": "ok"})
        elif self.path.startswith("/log/"):
            with lock:
                self.send_json(200, log[self.path[len("/log/") :]])
        elif self.path.endswith("/v1/models"):
            entry = {"id": MODEL, "dimension": DIMENSION, "family": "bert", "max_length": 64}
            self.send_json(200, {"object": "list", "data": [entry]})
        else:
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        match = re.fullmatch(r"/([^/]+)/([^/]+)/v1/embeddings", self.path)
        if match is None:
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        tag, rule = match.groups()
        with lock:
            tries[(tag, rule, body)] += 1
            count = tries[(tag, rule, body)]
        failing = re.fullmatch(r"(\d{3}|drop)x(\d+)(?:ra(\d+))?", rule)
        if failing and count <= int(failing.group(2)):
            with lock:
                log[tag].append((time.monotonic(), failing.group(1)))
            if failing.group(1) == "drop":
                self.close_connection = True
                self.connection.close()
                return
            headers = {"Retry-After": failing.group(3)} if failing.group(3) else {}
            message = f"try {count}: {failing.group(1)} on purpose"
            self.send_json(int(failing.group(1)), {"error": {"message": message}}, headers)
            return
        if rule.startswith("sleep"):
            with lock:
                log[tag].append((time.monotonic(), "sleep"))
            time.sleep(float(rule[len("sleep") :]))
        with lock:
            log[tag].append((time.monotonic(), "200"))
        texts = json.loads(body)["input"]
        data = [{"object": "embedding", "index": i, "embedding": vector(t)} for i, t in enumerate(texts)]
        self.send_json(200, {"object": "list", "data": data, "model": MODEL})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 makes concurrent connects wait 1 s for a SYN retry


if __name__ == "__main__":
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()
