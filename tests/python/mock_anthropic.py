"""A small stand-in for the Anthropic Messages API, speaking its real wire format (stdlib only).

``POST /v1/messages`` answers a ``message`` object, or with ``"stream": true`` the named SSE events
Anthropic sends (``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``,
``content_block_stop``, ``message_delta``, ``message_stop``). The reply is ``"echo: "`` and the last
user text; with a ``Bash`` tool (Claude Code's) and a last user text containing ``run tool`` it is a
``tool_use`` of ``Bash`` running ``TOOL_COMMAND``, and a last user turn holding a ``tool_result`` gets
``"tool said: <result>"``. ``POST /v1/messages/count_tokens`` answers ``{"input_tokens": words + 3}``; usage reports ``input_tokens`` (words + 3) separately from ``cache_read_input_tokens`` (4)
and ``cache_creation_input_tokens`` (2), as Anthropic does. Requests must carry ``x-api-key`` and
``anthropic-version``; each is recorded in ``requests``.
"""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

TOOL_COMMAND = "echo qnp-tool-ok"


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return " ".join(b.get("text", "") for b in content if b.get("type") == "text")
    return ""


def _tool_result_text(body: dict[str, Any]) -> str | None:
    """The text of the last user turn's tool_result, if it holds one."""
    messages = body.get("messages") or []
    if not messages or messages[-1].get("role") != "user" or not isinstance(messages[-1].get("content"), list):
        return None
    for block in messages[-1]["content"]:
        if block.get("type") == "tool_result":
            content = block.get("content")
            if isinstance(content, list):
                content = " ".join(b.get("text", "") for b in content if b.get("type") == "text")
            return str(content or "")
    return None


class MockAnthropic:
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
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                mock.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path == "/v1/messages/count_tokens" and self.headers.get("x-api-key") == mock.api_key:
                    return self._json(200, {"input_tokens": len(_last_user_text(body).split()) + 3})
                if self.path != "/v1/messages":
                    return self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "not found"}})
                if self.headers.get("x-api-key") != mock.api_key:
                    return self._json(401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
                if not self.headers.get("anthropic-version"):
                    return self._json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version header is required"}})
                result = _tool_result_text(body)
                tools = [t.get("name") for t in body.get("tools") or []]
                call = result is None and "Bash" in tools and "run tool" in _last_user_text(body)
                if result is not None:
                    text = "tool said: " + " ".join(result.split())
                else:
                    text = "echo: " + " ".join(_last_user_text(body).split())
                if call:
                    text = ""
                words = text.split()
                usage = {"input_tokens": len(words) + 3, "cache_creation_input_tokens": 2,
                         "cache_read_input_tokens": 4, "output_tokens": len(words)}
                tool_input = {"command": TOOL_COMMAND, "description": "Print the greeting"}
                tool_block = {"type": "tool_use", "id": "toolu_mock1", "name": "Bash", "input": tool_input}
                message = {"id": "msg_mock", "type": "message", "role": "assistant", "model": body.get("model"),
                           "content": [tool_block if call else {"type": "text", "text": text}],
                           "stop_reason": "tool_use" if call else "end_turn",
                           "stop_sequence": None, "usage": usage}
                if not body.get("stream"):
                    return self._json(200, message)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()

                def event(name: str, data: dict[str, Any]) -> None:
                    chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()

                start = dict(message, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
                event("message_start", {"type": "message_start", "message": start})
                if call:
                    event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": dict(tool_block, input={})})
                    event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": json.dumps(tool_input)}})
                else:
                    event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
                    event("ping", {"type": "ping"})
                    for i, word in enumerate(words):
                        piece = word if i == 0 else " " + word
                        event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})
                event("content_block_stop", {"type": "content_block_stop", "index": 0})
                event("message_delta", {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None}, "usage": {"output_tokens": max(len(words), 1)}})
                event("message_stop", {"type": "message_stop"})
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "MockAnthropic":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
