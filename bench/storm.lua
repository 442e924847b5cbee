-- A booking storm for wrk (bench/storm.py runs it): every request books a random one of a few
-- slots for a random one of many patients, so they all race for the same slots.
--
--   wrk -t2 -c64 -d60s --latency -s bench/storm.lua http://127.0.0.1:8080 -- PLAN PER_THREAD
--
-- PLAN holds lines "slot <booking JSON>" and "token <access token>". Each thread sends
-- PER_THREAD bookings and stops once all are answered, printing "STOPPED": wrk itself runs for -d
-- whatever its threads do, so storm.py interrupts it (SIGINT) when all have stopped, and wrk then
-- reports as usual; done() prints one line "STORM <JSON>".
--
-- wrk calls request() once in the first thread just to check it (that one is never sent), before
-- any delay(); wrk calls delay() before every request it really sends. wrk cannot skip a request,
-- so a connection with nothing left to send asks GET /healthz (not an attempt), after waiting 1 s
-- once the share is sent: normally the thread has stopped by then.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  bodies, tokens = {}, {}
  for line in io.lines(args[1]) do
    local kind, value = line:match("^(%S+) (.*)$")
    if kind == "slot" then
      table.insert(bodies, value)
    elseif kind == "token" then
      table.insert(tokens, value)
    end
  end
  share = tonumber(args[2])
  sent, answered, won, conflicts, other = 0, 0, 0, 0, 0
  running = false
  other_statuses = ""
  math.randomseed(os.time() * 100 + id)
end

function delay()
  running = true
  return sent < share and 0 or 1000
end

function request()
  if not running or sent >= share then
    return wrk.format("GET", "/healthz")
  end
  sent = sent + 1
  local headers = {
    ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)],
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", "/v1/appointments", headers, bodies[math.random(#bodies)])
end

function response(status, headers, body)
  if body:find('"appointment"', 1, true) then
    won = won + 1
  elseif status == 409 then
    conflicts = conflicts + 1
  elseif body:find('"code":0', 1, true) then
    return -- a /healthz answer: not an attempt
  else
    other = other + 1
    if #other_statuses < 200 then
      other_statuses = other_statuses .. status .. " "
    end
  end
  answered = answered + 1
  if answered == share then
    wrk.thread:stop()
    io.write("STOPPED\n")
    io.flush()
  end
end

function done(summary, latency, requests)
  local won_all, conflicts_all, other_all, others = 0, 0, 0, ""
  for _, thread in ipairs(threads) do
    won_all = won_all + thread:get("won")
    conflicts_all = conflicts_all + thread:get("conflicts")
    other_all = other_all + thread:get("other")
    others = others .. thread:get("other_statuses")
  end
  local errors = summary.errors
  io.write(string.format(
    'STORM {"won": %d, "conflicts": %d, "other": %d, "other_statuses": "%s", "requests": %d,'
      .. ' "duration_s": %.3f, "p50_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f,'
      .. ' "socket_errors": %d, "timeouts": %d}\n',
    won_all, conflicts_all, other_all, others, summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    errors.connect + errors.read + errors.write, errors.timeout))
end
