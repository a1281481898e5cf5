#!/usr/bin/env python3
"""Start a server and time how long it takes to answer HTTP.

    spawn_ready.py --port P --log FILE [--timeout S] -- CMD ARGS...

Starts CMD (stdout and stderr appended to FILE), then every millisecond tries a TCP connect to
127.0.0.1:P and a `GET /v1/models`. As soon as any HTTP status line comes back it prints
`PID READY_MS` and exits, leaving the server running (the caller stops it by PID).
If the server exits or is not ready within the timeout, it is killed and this exits 1.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def http_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("no command")
    log = open(a.log, "ab")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = t0 + a.timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            print(f"server exited with {proc.returncode} before it was ready; see {a.log}", file=sys.stderr)
            return 1
        if http_answers(a.port):
            ms = (time.perf_counter() - t0) * 1000.0
            print(f"{proc.pid} {ms:.2f}")
            return 0
        time.sleep(0.001)
    print(f"server not ready after {a.timeout}s; see {a.log}", file=sys.stderr)
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
