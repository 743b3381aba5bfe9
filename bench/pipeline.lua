-- wrk script for HTTP/1.1 pipelining, used by the peregrine-bench harness.
--
-- Usage: wrk -s pipeline.lua http://127.0.0.1:PORT/plaintext -- DEPTH
--
-- Every write carries DEPTH (default 16) back-to-back GET requests for the URL's
-- path; wrk sends the next batch only after all DEPTH responses arrived. wrk
-- still counts every response in "requests" and "Requests/sec", but records one
-- latency sample per batch (time to the last response of the batch).
--
-- wrk loads a single script per run, so the `done` hook below is a copy of the
-- one in keepalive.lua; the harness's tests check the two stay identical.

init = function(args)
  local depth = tonumber(args[1]) or 16
  local batch = {}
  for i = 1, depth do
    -- nil method/path: wrk.format falls back to GET and the URL's path.
    batch[i] = wrk.format(nil, nil)
  end
  pipelined = table.concat(batch)
end

request = function()
  return pipelined
end

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
