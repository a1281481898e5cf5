#!/usr/bin/env python3
"""Turn one run directory of benches/proxy/run.sh into the markdown results table.

    report.py RUN_DIR

Reads RUN_DIR/facts.txt (key=value lines) and the load tool's JSON files:
  one-{direct,qnp}.json    one client at a time, non-stream      (oha JSON or normalised JSON)
  open-{direct,qnp}.json   open loop at a fixed rate             (oha JSON or normalised JSON)
  peak-{direct,qnp}.json   closed loop, many connections         (oha JSON or normalised JSON)
  ttfb-{direct,qnp}.json   one client at a time, stream          (ttfb.py JSON)
A missing file gives "n/a" cells instead of failing, so a partial run still reports what it measured.
"""
import json
import os
import statistics
import sys

# The targets. "le" = the measured value must be at most the target, "ge" = at least.
TARGETS = {
    "one_p50": (0.3, "le", "ms"),
    "one_p99": (1.0, "le", "ms"),
    "ttfb_p50": (1.0, "le", "ms"),
    "open_p99": (2.0, "le", "ms"),
    "peak_rps": (5000.0, "ge", "req/s"),
    "ready_ms": (100.0, "le", "ms"),
    "rss_idle_mb": (30.0, "le", "MB"),
}

# Errors that only mean "still in flight when the timed run ended", not failures.
DEADLINE_ERRORS = ("aborted due to deadline",)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def normalise(doc):
    """oha's --output-format json, or already-normalised JSON (wrk fallback) -> common dict."""
    if doc is None:
        return None
    if "summary" in doc:  # oha
        s = doc["summary"]
        lp = doc.get("latencyPercentiles") or {}
        codes = {str(k): int(v) for k, v in (doc.get("statusCodeDistribution") or {}).items()}
        errs = {k: int(v) for k, v in (doc.get("errorDistribution") or {}).items()}
        hard_errors = sum(v for k, v in errs.items() if not any(d in k for d in DEADLINE_ERRORS))
        ok = codes.get("200", 0)
        non200 = sum(v for k, v in codes.items() if k != "200")

        def ms(key):
            v = lp.get(key)
            return None if v is None else float(v) * 1000.0

        return {
            "rps": float(s.get("requestsPerSec") or 0.0),
            "p50": ms("p50"),
            "p99": ms("p99"),
            "n": ok,
            "errors": hard_errors + non200,
            "detail": {"status": codes, "errors": errs},
        }
    return doc  # normalised already: {rps, p50, p99, n, errors}


def fmt(v, unit, digits=None):
    if v is None:
        return "n/a"
    if digits is None:
        digits = 0 if unit in ("req/s",) else (1 if unit in ("MB",) else 3)
    s = f"{v:,.{digits}f}"
    return f"{s} {unit}"


def verdict(key, value):
    if key not in TARGETS or value is None:
        return ""
    target, how, _ = TARGETS[key]
    ok = value <= target if how == "le" else value >= target
    return "yes" if ok else "**NO**"


def target_text(key):
    if key not in TARGETS:
        return ""
    target, how, unit = TARGETS[key]
    sign = "<=" if how == "le" else ">="
    digits = 0 if unit == "req/s" else 1 if target >= 1 else 2
    return f"{sign} {target:,.{digits}f} {unit}"


def main() -> int:
    d = sys.argv[1]
    facts = {}
    try:
        with open(os.path.join(d, "facts.txt")) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    facts[k] = v
    except OSError:
        pass

    def pair(name):
        return normalise(load(os.path.join(d, f"{name}-direct.json"))), normalise(load(os.path.join(d, f"{name}-qnp.json")))

    rows = []  # (metric, direct, qnp, added, target, pass)
    notes = []

    def latency_rows(name, label, keys):
        direct, qnp = pair(name)
        for pkey, tkey in keys:
            dv = direct.get(pkey) if direct else None
            qv = qnp.get(pkey) if qnp else None
            added = None if dv is None or qv is None else qv - dv
            rows.append((f"{label} {pkey}", fmt(dv, "ms"), fmt(qv, "ms"), fmt(added, "ms"),
                         target_text(tkey) if tkey else "", verdict(tkey, added) if tkey else ""))
        for side, doc in (("direct", direct), ("QNP", qnp)):
            if doc and doc.get("errors"):
                notes.append(f"{label}, {side}: {doc['errors']} failed requests of {doc['n'] + doc['errors']} "
                             f"({json.dumps(doc.get('detail', {}))})")
        return direct, qnp

    one_d, one_q = latency_rows("one", "1 client, non-stream, latency", [("p50", "one_p50"), ("p99", "one_p99")])

    td, tq = load(os.path.join(d, "ttfb-direct.json")), load(os.path.join(d, "ttfb-qnp.json"))
    for field, label, p, tkey in (("ttfb_ms", "first byte", "p50", "ttfb_p50"), ("ttfb_ms", "first byte", "p99", None),
                                  ("total_ms", "whole response", "p50", None), ("total_ms", "whole response", "p99", None)):
        dv = td[field].get(p) if td and td.get(field) else None
        qv = tq[field].get(p) if tq and tq.get(field) else None
        added = None if dv is None or qv is None else qv - dv
        rows.append((f"1 client, stream, {label} {p}", fmt(dv, "ms"), fmt(qv, "ms"), fmt(added, "ms"),
                     target_text(tkey) if tkey else "", verdict(tkey, added) if tkey else ""))
    for side, doc in (("direct", td), ("QNP", tq)):
        if doc and doc.get("errors"):
            notes.append(f"stream, {side}: {doc['errors']} failed requests")

    # The anthropic/ route: same measurements, translation included (no separate targets: the issue asks
    # that translation add no measurable overhead against the openai/ rows above).
    if os.path.exists(os.path.join(d, "one-anth-qnp.json")):
        latency_rows("one-anth", "anthropic/ route (translated), 1 client, non-stream, latency", [("p50", None), ("p99", None)])
        ad, aq = load(os.path.join(d, "ttfb-anth-direct.json")), load(os.path.join(d, "ttfb-anth-qnp.json"))
        for field, label, p in (("ttfb_ms", "first byte", "p50"), ("ttfb_ms", "first byte", "p99"), ("total_ms", "whole response", "p50")):
            dv = ad[field].get(p) if ad and ad.get(field) else None
            qv = aq[field].get(p) if aq and aq.get(field) else None
            added = None if dv is None or qv is None else qv - dv
            rows.append((f"anthropic/ route (translated), 1 client, stream, {label} {p}", fmt(dv, "ms"), fmt(qv, "ms"), fmt(added, "ms"), "", ""))

    # The /v1/responses route (openai/ passthrough): the same rows, to read against chat completions'.
    if os.path.exists(os.path.join(d, "one-resp-qnp.json")):
        latency_rows("one-resp", "/v1/responses route, 1 client, non-stream, latency", [("p50", None), ("p99", None)])
        rd, rq = load(os.path.join(d, "ttfb-resp-direct.json")), load(os.path.join(d, "ttfb-resp-qnp.json"))
        for field, label, p in (("ttfb_ms", "first byte", "p50"), ("ttfb_ms", "first byte", "p99"), ("total_ms", "whole response", "p50")):
            dv = rd[field].get(p) if rd and rd.get(field) else None
            qv = rq[field].get(p) if rq and rq.get(field) else None
            added = None if dv is None or qv is None else qv - dv
            rows.append((f"/v1/responses route, 1 client, stream, {label} {p}", fmt(dv, "ms"), fmt(qv, "ms"), fmt(added, "ms"), "", ""))
        for side, doc in (("direct", rd), ("QNP", rq)):
            if doc and doc.get("errors"):
                notes.append(f"responses stream, {side}: {doc['errors']} failed requests")

    rate = facts.get("open_rate", "?")
    open_d, open_q = pair("open")
    for pkey, tkey in (("p50", None), ("p99", "open_p99")):
        dv = open_d.get(pkey) if open_d else None
        qv = open_q.get(pkey) if open_q else None
        added = None if dv is None or qv is None else qv - dv
        rows.append((f"open loop {rate} req/s, latency {pkey}", fmt(dv, "ms"), fmt(qv, "ms"), fmt(added, "ms"),
                     target_text(tkey) if tkey else "", verdict(tkey, added) if tkey else ""))
    for side, doc in (("direct", open_d), ("QNP", open_q)):
        if doc:
            if doc.get("errors"):
                notes.append(f"open loop, {side}: {doc['errors']} failed requests ({json.dumps(doc.get('detail', {}))})")
            try:
                if doc["rps"] < 0.95 * float(rate):
                    notes.append(f"open loop, {side}: achieved only {doc['rps']:.0f} req/s of {rate} "
                                 "(the load generator or the machine could not keep up)")
            except ValueError:
                pass

    peak_d, peak_q = pair("peak")
    conc = facts.get("peak_conc", "?")
    dv = peak_d.get("rps") if peak_d else None
    qv = peak_q.get("rps") if peak_q else None
    rows.append((f"peak non-stream throughput ({conc} connections)", fmt(dv, "req/s"), fmt(qv, "req/s"),
                 "n/a" if dv is None or qv is None else f"{(qv / dv - 1) * 100:+.0f}%" if dv else "n/a",
                 target_text("peak_rps"), verdict("peak_rps", qv)))
    for pkey in ("p50", "p99"):
        dv = peak_d.get(pkey) if peak_d else None
        qv = peak_q.get(pkey) if peak_q else None
        rows.append((f"peak, latency {pkey}", fmt(dv, "ms"), fmt(qv, "ms"),
                     fmt(None if dv is None or qv is None else qv - dv, "ms"), "", ""))
    for side, doc in (("direct", peak_d), ("QNP", peak_q)):
        if doc and doc.get("errors"):
            notes.append(f"peak, {side}: {doc['errors']} failed requests ({json.dumps(doc.get('detail', {}))})")

    ready = [float(x) for x in facts.get("ready_ms", "").split() if x]
    if ready:
        med = statistics.median(ready)
        rows.append((f"`qnp serve` ready (median of {len(ready)} starts; max {max(ready):.1f} ms)", "", fmt(med, "ms", 1), "",
                     target_text("ready_ms"), verdict("ready_ms", med)))
    else:
        rows.append(("`qnp serve` ready", "", "n/a", "", target_text("ready_ms"), ""))

    def rss(key):
        v = facts.get(key)
        return None if not v else int(v) / 1024.0

    rows.append(("RSS idle (after start, before any request)", "", fmt(rss("rss_idle_kb"), "MB"), "",
                 target_text("rss_idle_mb"), verdict("rss_idle_mb", rss("rss_idle_kb"))))
    rows.append(("RSS after the non-stream load", "", fmt(rss("rss_load_kb"), "MB"), "", "", ""))
    rows.append(("RSS after the stream phase (restarted server)", "", fmt(rss("rss_stream_kb"), "MB"), "", "", ""))

    out = []
    out.append(f"### QNP proxy overhead ({facts.get('date', '')})")
    out.append("")
    out.append(f"- binary: `{facts.get('qnp_bin', '?')}` ({facts.get('qnp_version', '?')})")
    out.append(f"- upstream: nginx {facts.get('nginx_version', '?')} mock on 127.0.0.1, worker_processes 1; "
               f"load: {facts.get('tool', '?')}; machine: {facts.get('machine', '?')}")
    out.append(f"- 1 client: {facts.get('one_n', '?')} requests each side; stream: {facts.get('ttfb_n', '?')} "
               f"requests each side (Python, keep-alive, time to first body byte); open loop: "
               f"{facts.get('open_rate', '?')} req/s for {facts.get('duration', '?')} with latency correction; "
               f"peak: {facts.get('peak_conc', '?')} connections for {facts.get('duration', '?')}")
    out.append("")
    out.append("| metric | direct | through QNP | added | target | pass? |")
    out.append("| --- | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    if notes:
        out.append("")
        out.append("Notes:")
        for n in notes:
            out.append(f"- {n}")
    failed = [r[0] for r in rows if r[5] == "**NO**"]
    out.append("")
    out.append(f"{sum(1 for r in rows if r[5] == 'yes')} targets met, {len(failed)} missed"
               + (": " + "; ".join(failed) if failed else "") + ".")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
