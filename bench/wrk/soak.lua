-- Memory soak: cycle through the requests in BENCH_SOAK (one "path|body" a line) and
-- stop after BENCH_LIMIT responses (one wrk thread). wrk itself would still sleep for
-- its whole -d, so a marker on stderr tells bench/load.py to end it with SIGINT.
local limit = tonumber(os.getenv("BENCH_LIMIT") or "1000")
local auth = os.getenv("BENCH_AUTH")
local reqs = {}
local count, index = 0, 0

function init(args)
  local headers = {["Content-Type"] = "application/json"}
  if auth and auth ~= "" then headers["Authorization"] = auth end
  for line in (os.getenv("BENCH_SOAK") or ""):gmatch("[^\n]+") do
    local path, body = line:match("^([^|]+)|(.*)$")
    reqs[#reqs + 1] = wrk.format("POST", path, headers, body)
  end
end

function request()
  index = index % #reqs + 1
  return reqs[index]
end

function response(status, headers, body)
  count = count + 1
  if count == limit then
    wrk.thread:stop()
    io.stderr:write("BENCH_LIMIT_REACHED\n")
    io.stderr:flush()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
