-- wrk fallback for benches/proxy/run.sh (used only when oha is unavailable).
-- POSTs the file named by BENCH_BODY_FILE with `Authorization: Bearer $BENCH_AUTH`, and at the end prints
-- one line `BENCH_JSON {...}` in the normalised form report.py reads: rps, p50/p99 in ms, n, errors.
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_AUTH") or "bench")

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout + e.status
  local secs = summary.duration / 1e6
  io.write(string.format(
    'BENCH_JSON {"rps": %.3f, "p50": %.4f, "p99": %.4f, "n": %d, "errors": %d, "detail": {"non2xx": %d}}\n',
    (summary.requests - errors) / secs, latency:percentile(50) / 1000.0, latency:percentile(99) / 1000.0,
    summary.requests - errors, errors, e.status))
end
