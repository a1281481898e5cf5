"""Fixtures for black-box tests of the `qnp` binary: a mock OpenAI upstream, `qnp serve` processes
with their own data directories, and helpers for the operator CLI (`qnp keys create`, `qnp usage
export`).

The binary is $QNP_BIN, or <repo>/target/debug/qnp ($CARGO_TARGET_DIR honoured) when unset.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mock_anthropic import MockAnthropic  # noqa: E402
from mock_gemini import MockGemini  # noqa: E402
from mock_openai import MockOpenAI  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]

CSV_COLUMNS = [
    "timestamp",
    "request_id",
    "api_key_id",
    "endpoint",
    "provider",
    "model",
    "streamed",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "latency_ms",
    "ttft_ms",
    "cost_usd",
    "error_type",
]

# The upstream credential QNP is given; the mock accepts nothing else.
UPSTREAM_KEY = "sk-upstream-test-" + secrets.token_hex(12)

SERVER_START_TIMEOUT = 10.0
SERVER_STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 60.0
USAGE_POLL_TIMEOUT = 5.0

LISTENING_RE = re.compile(r"qnp listening on http://127\.0\.0\.1:(\d+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Variables a developer's or CI's environment may carry that would point QNP somewhere else.
_SCRUBBED_PREFIXES = ("QNP_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "STRIPE_", "GOOGLE_", "APPLE_")


def qnp_binary() -> Path:
    explicit = os.environ.get("QNP_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "debug" / "qnp"


def base_env(data_dir: Path, mock: MockOpenAI, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(
        {
            "QNP_DATA_DIR": str(data_dir),
            "QNP_OPENAI_BASE_URL": mock.base_url,
            "OPENAI_API_KEY": UPSTREAM_KEY,
            "QNP_BCRYPT_COST": "4",
            "QNP_SESSION_SECRET": secrets.token_hex(32),
            "RUST_LOG": "info",
            "RUST_BACKTRACE": "1",
            "NO_COLOR": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    for proxy_var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(proxy_var, None)
    env.update(extra)
    return env


class _Capture:
    """Drains one pipe of a child process into memory (so the child never blocks on a full pipe)."""

    def __init__(self, stream: io.BufferedReader, on_line=None) -> None:
        self._stream = stream
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._on_line = on_line
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in iter(self._stream.readline, b""):
            with self._lock:
                self._chunks.append(line)
            if self._on_line is not None:
                self._on_line(line)
        self._stream.close()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    @property
    def data(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class QnpServer:
    """One `qnp serve --listen 127.0.0.1:0` process."""

    def __init__(self, binary: Path, env: dict[str, str], data_dir: Path) -> None:
        self.binary = binary
        self.env = env
        self.data_dir = data_dir
        self.port: int | None = None
        self.returncode: int | None = None
        self.killed = False  # SIGTERM was not enough and stop() had to SIGKILL
        self._listening = threading.Event()
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.stdout = _Capture(self.proc.stdout)
        self.stderr = _Capture(self.proc.stderr, self._watch_line)

    def _watch_line(self, line: bytes) -> None:
        if self.port is None:
            match = LISTENING_RE.search(ANSI_RE.sub("", line.decode("utf-8", "replace")))
            if match:
                self.port = int(match.group(1))
                self._listening.set()

    def wait_listening(self, timeout: float = SERVER_START_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._listening.wait(0.05):
                return self.port  # type: ignore[return-value]
            if self.proc.poll() is not None:
                self.stderr.join(1)
                raise RuntimeError(
                    f"qnp serve exited with {self.proc.returncode} before listening:\n{self.stderr.text[-4000:]}"
                )
        raise RuntimeError(
            f"qnp serve did not log 'qnp listening on http://127.0.0.1:PORT' within {timeout}s:\n"
            f"{self.stderr.text[-4000:]}"
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def output(self) -> bytes:
        """Everything the process wrote to stdout and stderr so far."""
        return self.stdout.data + self.stderr.data

    def stop(self, timeout: float = SERVER_STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code (negative: killed by signal).
        Sets `killed` when SIGTERM was not enough."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(5)
        self.stdout.join()
        self.stderr.join()
        self.returncode = self.proc.returncode
        return self.returncode


class Gateway:
    """A running `qnp serve` plus the CLI bound to the same data directory and environment."""

    def __init__(self, binary: Path, data_dir: Path, mock: MockOpenAI, **extra_env: str) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.mock = mock
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = base_env(data_dir, mock, **extra_env)
        self.server = QnpServer(binary, self.env, data_dir)
        self.cli_outputs: list[bytes] = []  # every CLI call's stdout + stderr
        try:
            self.port = self.server.wait_listening()
        except Exception:
            self.server.stop()
            raise

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def stop(self) -> int:
        return self.server.stop()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(self.binary), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CLI_TIMEOUT,
        )
        self.cli_outputs.append(result.stdout + result.stderr)
        if check and result.returncode != 0:
            raise AssertionError(
                f"qnp {' '.join(args)} exited with {result.returncode}\n"
                f"stdout:\n{result.stdout.decode(errors='replace')}\n"
                f"stderr:\n{result.stderr.decode(errors='replace')}"
            )
        return result

    def create_key(self, email: str, plan: str | None = "pro", name: str | None = None) -> str:
        args = ["keys", "create", "--email", email]
        if plan:
            args += ["--plan", plan]
        if name:
            args += ["--name", name]
        out = self.cli(*args).stdout.decode()
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        assert lines, f"qnp keys create printed nothing on stdout for {email}"
        key = lines[-1]
        assert " " not in key and len(key) >= 20, f"last stdout line does not look like a key: {key!r}"
        return key

    def usage_csv(self, email: str) -> str:
        return self.cli("usage", "export", "--email", email).stdout.decode()

    def usage_rows(self, email: str, expected: int, timeout: float = USAGE_POLL_TIMEOUT) -> list[dict[str, str]]:
        """Polls `qnp usage export` until at least `expected` rows are there (rows are written
        asynchronously), then once more a moment later so surplus rows show up too."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, str]] = []
        while True:
            rows = parse_usage_csv(self.usage_csv(email))
            if len(rows) >= expected or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if len(rows) >= expected:
            time.sleep(0.3)
            rows = parse_usage_csv(self.usage_csv(email))
        return rows

    def client(self, key: str, **kwargs: Any):
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=30.0, **kwargs)


def parse_usage_csv(text: str) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(text))
    rows = list(reader)
    assert rows, "usage export printed no CSV header"
    assert rows[0] == CSV_COLUMNS, f"usage export header is {rows[0]}, expected {CSV_COLUMNS}"
    for i, row in enumerate(rows[1:], start=2):
        assert len(row) == len(CSV_COLUMNS), f"CSV line {i} has {len(row)} fields: {row}"
    return [dict(zip(CSV_COLUMNS, row)) for row in rows[1:]]


def unique_email(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def qnp_bin() -> Path:
    binary = qnp_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"qnp binary not found or not executable at {binary}; build it (cargo build -p qnp) "
            "or set QNP_BIN",
            pytrace=False,
        )
    return binary


@pytest.fixture(scope="session")
def mock_openai() -> Iterator[MockOpenAI]:
    mock = MockOpenAI(api_key=UPSTREAM_KEY).start()
    try:
        yield mock
    finally:
        mock.stop()


@pytest.fixture(scope="session")
def gateway(qnp_bin: Path, mock_openai: MockOpenAI, tmp_path_factory) -> Iterator[Gateway]:
    """The shared `qnp serve`, started once for the session."""
    gw = Gateway(qnp_bin, tmp_path_factory.mktemp("qnp-data"), mock_openai)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def start_gateway(qnp_bin: Path, mock_openai: MockOpenAI, tmp_path: Path):
    """Starts extra, test-private gateways (own data directory, extra environment); all are
    stopped at teardown."""
    started: list[Gateway] = []

    def start(name: str = "qnp-data", **extra_env: str) -> Gateway:
        gw = Gateway(qnp_bin, tmp_path / name, mock_openai, **extra_env)
        started.append(gw)
        return gw

    try:
        yield start
    finally:
        for gw in started:
            gw.stop()


@pytest.fixture
def claude_gateway(start_gateway):
    """A test-private gateway whose `anthropic/` models go to a mock Anthropic upstream."""
    upstream = MockAnthropic(api_key=UPSTREAM_KEY).start()
    gateway = start_gateway("claude", ANTHROPIC_API_KEY=UPSTREAM_KEY, QNP_ANTHROPIC_BASE_URL=upstream.url)
    try:
        yield gateway, upstream
    finally:
        upstream.stop()


@pytest.fixture
def gemini_gateway(start_gateway):
    """A test-private gateway whose `google/` models go to a mock Gemini upstream."""
    upstream = MockGemini(api_key=UPSTREAM_KEY).start()
    gateway = start_gateway("gemini", GEMINI_API_KEY=UPSTREAM_KEY, QNP_GEMINI_BASE_URL=upstream.url)
    try:
        yield gateway, upstream
    finally:
        upstream.stop()
