-- wrk script for scripts/bench-webhook and scripts/bench-replicas: POSTs a
-- real-shaped Pipeline Hook body with a fresh pipeline id (the body's
-- 987654321) and Idempotency-Key per request, so every request is a new
-- event (new by its natural key too) that the server must persist before
-- answering. KEY_PREFIX keeps two wrk processes' events apart.
local body_file = os.getenv("BODY_FILE")
local f = assert(io.open(body_file, "rb"))
local body = f:read("*a")
f:close()
local token = os.getenv("WEBHOOK_TOKEN")
local prefix = os.getenv("KEY_PREFIX") or "1"

local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local n = 0
function request()
  n = n + 1
  local id = prefix .. tid .. string.format("%09d", n)
  return wrk.format("POST", "/webhook", {
    ["Content-Type"] = "application/json",
    ["X-Gitlab-Event"] = "Pipeline Hook",
    ["X-Gitlab-Token"] = token,
    ["Idempotency-Key"] = id,
  }, (body:gsub("987654321", id)))
end

local statuses = {}
function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end
