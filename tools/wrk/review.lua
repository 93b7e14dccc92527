-- POST one AdmissionReview (file in REVIEW_FILE) per request; with RATE set, pace each connection
-- so all connections together send about RATE requests per second (wrk measures latency without
-- the pause, as a constant-rate client would see it).
local body_file = os.getenv("REVIEW_FILE")
local f = assert(io.open(body_file, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

-- With DISTINCT set, the body's __AIM_SEQ__ becomes a counter: every review is a different object
-- (no two alike for the webhook's memo), where without it every review is the same one.
local distinct = os.getenv("DISTINCT") == "1"
local seq = 0
if distinct then
  local body = wrk.body
  function request()
    seq = seq + 1
    return wrk.format(nil, nil, nil, (body:gsub("__AIM_SEQ__", tostring(seq))))
  end
end

local rate = tonumber(os.getenv("RATE") or "0")
local connections = tonumber(os.getenv("CONNECTIONS") or "1")

function delay()
  if rate > 0 then
    return math.floor(1000 * connections / rate)
  end
  return 0
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT requests=%d duration_s=%.2f rps=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000, errors))
end
