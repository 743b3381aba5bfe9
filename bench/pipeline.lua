-- wrk script for HTTP/1.1 pipelining, used by the peregrine-bench harness.
--
-- Usage: wrk -s pipeline.lua http://127.0.0.1:PORT/plaintext -- DEPTH
--
-- Every write carries DEPTH (default 16) back-to-back GET requests for the URL's
-- path; wrk sends the next batch only after all DEPTH responses arrived. wrk
-- still counts every response in "requests" and "Requests/sec", but records one
-- latency sample per batch (time to the last response of the batch).

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
