"""A small stand-in for the OpenAI API, speaking its real wire format (stdlib only).

It serves, under ``/v1``:

* ``POST /v1/chat/completions``: a ``chat.completion`` object, or with ``"stream": true`` a
  ``text/event-stream`` of ``chat.completion.chunk`` objects ending in ``data: [DONE]``. As OpenAI
  does, a stream asked for with ``stream_options.include_usage`` carries ``"usage": null`` on every
  chunk and one extra usage-only chunk (``"choices": []``) before ``[DONE]``; without it no chunk
  has a ``usage`` field. Chunks also carry OpenAI's ``obfuscation`` padding unless
  ``stream_options.include_obfuscation`` is false.
* ``POST /v1/embeddings``: a ``list`` of ``embedding`` objects (8 floats each, or base64 of
  little-endian float32 when ``encoding_format`` is ``base64``, which the official SDKs ask for).
* ``POST /v1/responses``: the Responses API, whole or streamed (see ``mock_openai_responses``).
* ``GET /v1/models``: a short model list.

Knobs for tests: ``stream_delay`` (seconds between stream chunks), ``done_linger`` (seconds between
``data: [DONE]`` and the end of the HTTP body), ``inject_error(status, payload, times)``.

Every request must carry ``Authorization: Bearer <api_key>``; otherwise the answer is OpenAI's
401 ``invalid_api_key`` error. Every request (method, path, headers, parsed JSON body) is
recorded in ``MockOpenAI.requests`` for tests to inspect.

Replies are deterministic so tests can predict them (see ``chat_reply`` / ``chat_usage``):

* the completion text is ``"echo: "`` followed by the last user message (whitespace collapsed),
  so a string sent in a prompt comes back in the completion;
* ``prompt_tokens`` = number of whitespace-separated words in all messages + 7,
  ``completion_tokens`` = words in the reply, ``cached_tokens`` = min(4, prompt_tokens),
  ``reasoning_tokens`` = 0;
* embeddings: ``prompt_tokens`` = words in all string inputs (+ length of token-array inputs).

Run standalone: ``python mock_openai.py [--port N] [--api-key KEY]`` prints
``mock_openai listening on 127.0.0.1:PORT (base URL http://127.0.0.1:PORT/v1)`` and serves until
interrupted.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import http.server
import json
import os
import random
import string
import struct
import sys
import threading
import time
import uuid
from typing import Any, Callable

import mock_openai_responses

DEFAULT_API_KEY = "sk-mock-upstream-0123456789"
EMBEDDING_DIMENSIONS = 8
PROMPT_OVERHEAD_TOKENS = 7
CACHED_TOKENS = 4
SYSTEM_FINGERPRINT = "fp_mock0openai"


# ---------------------------------------------------------------------------------------------
# Deterministic model behaviour (importable by tests to compute expected values).
# ---------------------------------------------------------------------------------------------


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or an array of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, str):
                texts.append(part)
        return " ".join(texts)
    return str(content)


def word_count(text: str) -> int:
    return len(text.split())


def chat_reply(messages: list[dict[str, Any]]) -> str:
    """The completion text for ``messages``: ``"echo: "`` + the last user message."""
    last_user = ""
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            last_user = content_text(message.get("content"))
    return " ".join(["echo:"] + last_user.split())


def prompt_tokens_for(messages: list[dict[str, Any]]) -> int:
    words = sum(
        word_count(content_text(m.get("content"))) for m in messages if isinstance(m, dict)
    )
    return words + PROMPT_OVERHEAD_TOKENS


def chat_usage(messages: list[dict[str, Any]], reply: str | None = None) -> dict[str, Any]:
    """OpenAI's ``usage`` object for a chat call with these messages (and this reply text)."""
    if reply is None:
        reply = chat_reply(messages)
    prompt = prompt_tokens_for(messages)
    completion = word_count(reply)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(CACHED_TOKENS, prompt), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def embedding_inputs(value: Any) -> list[Any]:
    """``input`` as a list of items (strings or token arrays)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [value]  # one token array
        return list(value)
    return [value]


def embedding_tokens(value: Any) -> int:
    total = 0
    for item in embedding_inputs(value):
        if isinstance(item, str):
            total += word_count(item)
        elif isinstance(item, list):
            total += len(item)
    return total


def embedding_vector(item: Any, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit-ish vector derived from the input item (exactly representable in f32)."""
    digest = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).digest()
    return [((digest[i % len(digest)] - 128) / 128.0) for i in range(dimensions)]


# ---------------------------------------------------------------------------------------------
# The server.
# ---------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    """Compact JSON, as OpenAI's servers write it."""
    return json.dumps(obj, separators=(",", ":")).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked streams
    server_version = "mock-openai/1.0"
    timeout = 60  # an idle keep-alive connection is closed after this

    # The MockOpenAI instance is attached to the server object.
    @property
    def mock(self) -> "MockOpenAI":
        return self.server.mock  # type: ignore[attr-defined]

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.mock.verbose:
            sys.stderr.write("mock_openai: %s - %s\n" % (self.address_string(), format % args))

    # -- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until the empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, obj: Any, extra_headers: dict[str, str] | None = None) -> None:
        body = _dumps(obj)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "req_mock_" + uuid.uuid4().hex[:16])
        self.send_header("openai-processing-ms", "3")
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _send_error(
        self, status: int, message: str, err_type: str, code: str | None = None, param: str | None = None
    ) -> None:
        self._send_json(
            status, {"error": {"message": message, "type": err_type, "param": param, "code": code}}
        )

    def _record(self, body_bytes: bytes) -> Any:
        try:
            parsed = json.loads(body_bytes) if body_bytes else None
        except ValueError:
            parsed = None
        self.mock._record(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": parsed,
                "raw": body_bytes,
                "time": time.time(),
            }
        )
        return parsed

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth == f"Bearer {self.mock.api_key}":
            return True
        shown = auth.split(" ", 1)[1] if " " in auth else ""
        hint = (shown[:3] + "*" * 4 + shown[-4:]) if len(shown) > 8 else "****"
        if not auth:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            self._send_error(401, message, "invalid_request_error", None)
        else:
            self._send_error(
                401,
                f"Incorrect API key provided: {hint}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        return False

    # -- routes -----------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        self._record(b"")
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        if path == "/v1/models":
            created = 1_700_000_000
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": created, "owned_by": "system"}
                        for m in ("gpt-4o-mini", "text-embedding-3-small")
                    ],
                },
            )
            return
        self._not_found()

    def do_POST(self) -> None:  # noqa: N802
        raw = self._read_body()
        body = self._record(raw)
        if not self._authorized():
            return
        injected = self.mock._next_injected_error()
        if injected is not None:
            status, payload = injected
            self._send_json(status, payload)
            return
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/chat/completions", "/v1/embeddings", "/v1/responses"):
            self._not_found()
            return
        if not isinstance(body, dict):
            self._send_error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON.)",
                "invalid_request_error",
            )
            return
        if not isinstance(body.get("model"), str) or not body["model"]:
            self._send_error(400, "you must provide a model parameter", "invalid_request_error", None, "model")
            return
        if path == "/v1/chat/completions":
            self._chat(body)
        elif path == "/v1/responses":
            mock_openai_responses.handle(self, body)
        else:
            self._embeddings(body)

    def _not_found(self) -> None:
        self._send_error(
            404, f"Invalid URL ({self.command} {self.path})", "invalid_request_error", None
        )

    def _chat(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self._send_error(
                400,
                "Invalid value for 'messages': expected a non-empty array.",
                "invalid_request_error",
                "invalid_value",
                "messages",
            )
            return
        reply = chat_reply(messages)
        words = reply.split()
        finish_reason = "stop"
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and 0 < limit < len(words):
            words = words[:limit]
            finish_reason = "length"
        reply = " ".join(words)
        usage = chat_usage(messages, reply)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = body["model"]
        if body.get("stream") is True:
            self._chat_stream(body, completion_id, created, model, words, finish_reason, usage)
            return
        self._send_json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": reply,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
            },
        )

    def _chat_stream(
        self,
        body: dict[str, Any],
        completion_id: str,
        created: int,
        model: str,
        words: list[str],
        finish_reason: str,
        usage: dict[str, Any],
    ) -> None:
        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        include_usage = options.get("include_usage") is True
        obfuscate = options.get("include_obfuscation", True) is not False
        rng = random.Random()

        def chunk(choices: list[dict[str, Any]], usage_value: Any = None, last: bool = False) -> bytes:
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": choices,
            }
            if include_usage:
                obj["usage"] = usage_value if last else None
            if obfuscate:
                obj["obfuscation"] = "".join(
                    rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(2, 12))
                )
            return b"data: " + _dumps(obj) + b"\n\n"

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        events = [chunk(choice({"role": "assistant", "content": "", "refusal": None}))]
        for i, word in enumerate(words):
            events.append(chunk(choice({"content": word if i == 0 else " " + word})))
        events.append(chunk(choice({}, finish_reason)))
        if include_usage:
            events.append(chunk([], usage, last=True))
        events.append(b"data: [DONE]\n\n")

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", "req_mock_" + uuid.uuid4().hex[:16])
        self.end_headers()
        try:
            for i, event in enumerate(events):
                if i and self.mock.stream_delay:
                    time.sleep(self.mock.stream_delay)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            if self.mock.done_linger:
                # The body ends a moment after [DONE], as it can over a real network.
                time.sleep(self.mock.done_linger)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _embeddings(self, body: dict[str, Any]) -> None:
        if "input" not in body or body["input"] in ("", [], None):
            self._send_error(
                400, "'input' is a required property", "invalid_request_error", None, "input"
            )
            return
        items = embedding_inputs(body["input"])
        dimensions = body.get("dimensions")
        if not isinstance(dimensions, int) or dimensions <= 0:
            dimensions = EMBEDDING_DIMENSIONS
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(items):
            vector = embedding_vector(item, dimensions)
            embedding: Any = vector
            if as_base64:
                embedding = base64.b64encode(struct.pack("<%df" % len(vector), *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = embedding_tokens(body["input"])
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class MockOpenAI:
    """The mock server. ``start()`` binds 127.0.0.1 (port 0 = any free port) and serves in a thread."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        stream_delay: float = 0.005,
        verbose: bool = False,
    ) -> None:
        self.api_key = api_key
        self.stream_delay = stream_delay
        # Seconds between a stream's `data: [DONE]` and the end of its HTTP body.
        self.done_linger = 0.0
        self.verbose = verbose
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._injected: list[tuple[int, Any]] = []
        self._server = _Server((host, port), _Handler)
        self._server.mock = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """The base URL as OpenAI's SDKs and QNP_OPENAI_BASE_URL take it (ends in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "MockOpenAI":
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "MockOpenAI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- what tests use ---------------------------------------------------------------------

    def _record(self, request: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return copy.deepcopy(self._requests)

    def mark(self) -> int:
        """A position to pass to ``requests_since`` later."""
        with self._lock:
            return len(self._requests)

    def requests_since(self, mark: int) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._requests[mark:])

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [r for r in self.requests if predicate(r)]

    def requests_containing(self, text: str) -> list[dict[str, Any]]:
        """Requests whose raw body contains ``text`` (for example a per-test marker in a prompt)."""
        needle = text.encode()
        return self.find(lambda r: needle in r["raw"])

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def inject_error(self, status: int, payload: Any | None = None, times: int = 1) -> None:
        """Answer the next `times` authorised POSTs with this status and JSON payload (OpenAI's
        server_error by default) instead of a normal reply. `clear_injected` drops what is left."""
        if payload is None:
            payload = {
                "error": {
                    "message": "The server had an error while processing your request. Sorry about that!",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        with self._lock:
            self._injected.extend([(status, payload)] * times)

    def clear_injected(self) -> None:
        with self._lock:
            self._injected.clear()

    def _next_injected_error(self) -> tuple[int, Any] | None:
        with self._lock:
            return self._injected.pop(0) if self._injected else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mock OpenAI API server (chat completions, embeddings)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY", DEFAULT_API_KEY),
        help="the bearer key clients must send (default: $OPENAI_API_KEY or a fixed test key)",
    )
    parser.add_argument("--stream-delay", type=float, default=0.005, help="seconds between stream chunks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each request line to stderr")
    args = parser.parse_args(argv)
    mock = MockOpenAI(api_key=args.api_key, port=args.port, stream_delay=args.stream_delay, verbose=args.verbose)
    print(
        f"mock_openai listening on 127.0.0.1:{mock.port} (base URL {mock.base_url})",
        flush=True,
    )
    try:
        mock._server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        mock._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
