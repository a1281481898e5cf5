"""A small stand-in for the Gemini Developer API, speaking its real wire format (stdlib only).

``POST /v1beta/models/{model}:generateContent`` answers a ``GenerateContentResponse``;
``:streamGenerateContent?alt=sse`` answers ``data:`` events, each a whole ``GenerateContentResponse``
with the next piece of text and the running ``usageMetadata``, the last with ``finishReason: STOP``,
and no ``[DONE]`` (Gemini has none). The reply is ``"echo: "`` + the last user text; usage:
``promptTokenCount`` = words in all user and model parts + 5, ``candidatesTokenCount`` = words of the
reply. Requests must carry ``x-goog-api-key``; errors use Google's ``{"error": {"code", "message",
"status"}}``. Each request is recorded in ``requests``.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from typing import Any

PATH = re.compile(r"^/v1beta/models/([^:/]+):(generateContent|streamGenerateContent)$")


def _text(content: dict[str, Any]) -> str:
    return " ".join(p.get("text", "") for p in content.get("parts", []) if isinstance(p, dict))


class MockGemini:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        mock = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=UTF-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, code: int, status: str, message: str) -> None:
                self._json(code, {"error": {"code": code, "message": message, "status": status}})

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                path, _, query = self.path.partition("?")
                mock.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                match = PATH.match(path)
                if not match:
                    return self._error(404, "NOT_FOUND", "not found")
                if self.headers.get("x-goog-api-key") != mock.api_key:
                    return self._error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
                model, action = match.groups()
                contents = body.get("contents") or []
                users = [c for c in contents if c.get("role", "user") == "user"]
                reply = " ".join(["echo:"] + (_text(users[-1]).split() if users else []))
                prompt = sum(len(_text(c).split()) for c in contents) + 5
                words = reply.split()

                def response(text: str, done: bool, produced: int) -> dict[str, Any]:
                    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
                    if done:
                        candidate["finishReason"] = "STOP"
                    return {
                        "candidates": [candidate],
                        "usageMetadata": {
                            "promptTokenCount": prompt,
                            "candidatesTokenCount": produced,
                            "totalTokenCount": prompt + produced,
                        },
                        "modelVersion": model,
                        "responseId": "mock-gemini-response",
                    }

                if action == "generateContent":
                    return self._json(200, response(reply, True, len(words)))
                if "alt=sse" not in query:
                    return self._error(400, "INVALID_ARGUMENT", "this mock streams only with alt=sse")
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for i, word in enumerate(words):
                    piece = word if i == 0 else " " + word
                    event = f"data: {json.dumps(response(piece, i == len(words) - 1, i + 1))}\r\n\r\n".encode()
                    self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "MockGemini":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
