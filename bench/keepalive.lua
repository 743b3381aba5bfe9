-- wrk script for plain keep-alive runs, used by the peregrine-bench harness.
--
-- Usage: wrk -s keepalive.lua http://127.0.0.1:PORT/plaintext
--
-- wrk's default request (GET of the URL's path, one per write); the script only
-- adds the `done` hook, so every run ends with a line the harness can parse
-- instead of scraping wrk's human-readable report for latency.

-- BEGIN done hook (keep identical in keepalive.lua and pipeline.lua)
-- One machine-readable line after wrk's own report: latency percentiles in
-- microseconds from wrk's histogram (the same one behind --latency, at full
-- precision and with p99.9, which --latency does not print) and the error
-- counters. Counts use %.0f, not %d: they are Lua numbers (doubles).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "peregrine-bench-wrk requests=%.0f duration_us=%.0f" ..
    " p50_us=%.2f p75_us=%.2f p90_us=%.2f p99_us=%.2f p99.9_us=%.2f max_us=%.0f" ..
    " connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
-- END done hook
