-- wrk script: POST bodies in turn (or GET $WRK_PATH when $WRK_METHOD is GET) (one JSON body per line of $WRK_BODIES) to $WRK_PATH, and time
-- every request itself with clock_gettime(CLOCK_MONOTONIC) through LuaJIT's FFI. Run with as many
-- threads as connections (-t N -c N): one connection per thread, so each response belongs to the
-- request sent just before it. At the end the latencies (microseconds) of every thread and the
-- non-2xx count are written to $WRK_OUT, one number per line, "errors N" first.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } cto_timespec;
int clock_gettime(int clock_id, cto_timespec *tp);
]]
local clock = ffi.new("cto_timespec")
local function now_us()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1000000 + tonumber(clock.tv_nsec) / 1000
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local requests = {}
local index = 0
local started = 0
latencies = {}
errors = 0

function init(args)
  local path = os.getenv("WRK_PATH")
  local headers = { ["Content-Type"] = "application/json" }
  local token = os.getenv("WRK_TOKEN")
  if token and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  local method = os.getenv("WRK_METHOD") or "POST"
  for line in io.lines(os.getenv("WRK_BODIES")) do
    if method == "GET" then
      table.insert(requests, wrk.format("GET", path, headers))
    else
      table.insert(requests, wrk.format("POST", path, headers, line))
    end
  end
end

function request()
  index = index % #requests + 1
  started = now_us()
  return requests[index]
end

function response(status, headers, body)
  latencies[#latencies + 1] = now_us() - started
  if status < 200 or status > 299 then
    errors = errors + 1
  end
end

function done(summary, latency, requests_done)
  local out = io.open(os.getenv("WRK_OUT"), "w")
  local total_errors = 0
  for _, thread in ipairs(threads) do
    total_errors = total_errors + thread:get("errors")
  end
  out:write("errors ", total_errors, "\n")
  for _, thread in ipairs(threads) do
    for _, value in ipairs(thread:get("latencies")) do
      out:write(string.format("%.1f\n", value))
    end
  end
  out:close()
end
