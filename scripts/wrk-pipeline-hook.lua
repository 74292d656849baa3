-- wrk script for scripts/bench-webhook: POSTs one real-shaped Pipeline Hook
-- body with a fresh Idempotency-Key per request, so every request is a new
-- event that the server must persist before answering.
local body_file = os.getenv("BODY_FILE")
local f = assert(io.open(body_file, "rb"))
local body = f:read("*a")
f:close()
local token = os.getenv("WEBHOOK_TOKEN")

local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local n = 0
function request()
  n = n + 1
  return wrk.format("POST", "/webhook", {
    ["Content-Type"] = "application/json",
    ["X-Gitlab-Event"] = "Pipeline Hook",
    ["X-Gitlab-Token"] = token,
    ["Idempotency-Key"] = tid .. "-" .. n,
  }, body)
end

local statuses = {}
function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end
