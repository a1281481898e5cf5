#!/usr/bin/env python3
"""One client, one request at a time, on one keep-alive connection: time to first body byte and to the end.

    ttfb.py --url http://127.0.0.1:PORT/PATH --body FILE [--auth KEY] [-n 300] [--warmup 30] [--max-seconds 60]

Prints one JSON object: {"n", "errors", "ttfb_ms": {p50,p90,p99,mean,min,max}, "total_ms": {...}}.
TTFB is measured from just before the request is written to the first byte of the response body (for an
SSE reply, the first `data:` event), so a gateway that sends headers early gains nothing from it.
"""
import argparse
import http.client
import json
import sys
import time
import urllib.parse


def pct(sorted_ms, p):
    if not sorted_ms:
        return None
    k = max(0, min(len(sorted_ms) - 1, int(round(p / 100.0 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def summary(xs):
    s = sorted(xs)
    if not s:
        return {}
    return {
        "p50": pct(s, 50),
        "p90": pct(s, 90),
        "p99": pct(s, 99),
        "mean": sum(s) / len(s),
        "min": s[0],
        "max": s[-1],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("--auth")
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    a = ap.parse_args()

    u = urllib.parse.urlsplit(a.url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        print("only loopback targets are allowed", file=sys.stderr)
        return 2
    body = open(a.body, "rb").read()
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}
    if a.auth:
        headers["Authorization"] = f"Bearer {a.auth}"

    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    ttfb, total, errors = [], [], 0
    deadline = time.perf_counter() + a.max_seconds
    for i in range(a.warmup + a.n):
        if time.perf_counter() > deadline:
            break
        try:
            t0 = time.perf_counter()
            conn.request("POST", u.path, body=body, headers=headers)
            r = conn.getresponse()
            first = r.read(1)
            t1 = time.perf_counter()
            rest = r.read()
            t2 = time.perf_counter()
            ok = r.status == 200 and first and (b"[DONE]" in rest or b'"usage"' in rest)
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        if i < a.warmup:
            continue
        if not ok:
            errors += 1
            continue
        ttfb.append((t1 - t0) * 1000.0)
        total.append((t2 - t0) * 1000.0)
    conn.close()
    print(json.dumps({"n": len(ttfb), "errors": errors, "ttfb_ms": summary(ttfb), "total_ms": summary(total)}))
    return 0 if ttfb else 1


if __name__ == "__main__":
    sys.exit(main())
