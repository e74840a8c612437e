"""A real HTTP server on 127.0.0.1 (port 0) speaking enough of the OpenAI API for the
``openai`` client: ``POST /v1/chat/completions`` and ``GET /v1/models``.

``OpenAIServer(answer)``: ``answer(request) -> str | Fail | Hang | Garbage`` gets the
parsed request body (``model``, ``messages``, ...) and says what to send back:

- a ``str``: a normal chat completion with that content;
- ``Fail(status)``: an HTTP error (with ``retry-after-ms: 1`` so the client's retries
  do not wait);
- ``Hang(seconds, then)``: answer ``then`` after sleeping (a shorter client timeout fires);
- ``Garbage()``: HTTP 200 whose body is not JSON.

Every chat request is recorded in ``requests`` (bodies, in arrival order) and its
``response_format`` (None when absent) in ``formats``; helpers ``text(request)`` (all
text parts joined) and ``n_images`` / ``n_audio`` read them.

``OpenAIServer(answer, reject_response_format=True)`` behaves like a server without
structured outputs: a request carrying ``response_format`` gets HTTP 400 naming it
(as vLLM/OpenAI word a bad parameter), before ``answer`` is asked; ``rejected`` counts
those.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fail:
    status: int = 503


@dataclass
class Hang:
    seconds: float
    then: str = "late"  # the answer sent after the wait


@dataclass
class Garbage:
    body: str = "<html>502 Bad Gateway</html>"


def text(request: dict) -> str:
    """All text of a request's messages, joined by newlines."""
    out = []
    for m in request.get("messages", []):
        c = m.get("content")
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list):
            out += [p.get("text", "") for p in c if p.get("type") == "text"]
    return "\n".join(out)


def _parts(request: dict, kind: str) -> int:
    return sum(1 for m in request.get("messages", []) if isinstance(m.get("content"), list)
               for p in m["content"] if p.get("type") == kind)


def n_images(request: dict) -> int:
    return _parts(request, "image_url")


def n_audio(request: dict) -> int:
    return _parts(request, "input_audio")


class OpenAIServer:
    def __init__(self, answer, reject_response_format: bool = False):
        self.answer = answer
        self.reject_response_format = reject_response_format
        self.requests: list[dict] = []
        self.formats: list[dict | None] = []
        self.rejected = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: str, ctype: str = "application/json", extra=()):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, json.dumps({"object": "list", "data": [
                        {"id": "test-model", "object": "model", "created": 0, "owned_by": "test"}]}))
                else:
                    self._send(404, json.dumps({"error": {"message": "not found"}}))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self._send(404, json.dumps({"error": {"message": "not found"}}))
                    return
                with server.lock:
                    server.requests.append(body)
                    server.formats.append(body.get("response_format"))
                    refuse = server.reject_response_format and "response_format" in body
                    server.rejected += refuse
                if refuse:
                    self._send(400, json.dumps({"error": {
                        "message": "Unsupported parameter: 'response_format' is not supported by this server.",
                        "type": "invalid_request_error", "param": "response_format", "code": None}}))
                    return
                reply = server.answer(body)
                if isinstance(reply, Hang):
                    time.sleep(reply.seconds)
                    reply = reply.then
                if isinstance(reply, Fail):
                    self._send(reply.status, json.dumps({"error": {"message": f"scripted {reply.status}"}}),
                               extra=[("retry-after-ms", "1")])
                elif isinstance(reply, Garbage):
                    self._send(200, reply.body, ctype="text/html")
                else:
                    self._send(200, json.dumps({
                        "id": "chatcmpl-test", "object": "chat.completion", "created": 0,
                        "model": body.get("model", ""),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": str(reply)}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def count(self, pred=lambda r: True) -> int:
        with self.lock:
            return sum(1 for r in self.requests if pred(r))

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
