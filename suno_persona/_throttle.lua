-- The shared throttle state of one (base URL, API key), in one atomic script per call.
--
-- The same decisions as suno_persona/_throttle.py (LocalState), _rate.py (AdaptiveRate) and
-- _breaker.py (MaintenanceBreaker), on the Redis server's clock (or the client's wall clock
-- when ARGV[2] is given). Every time returned is a delay from "now", never an absolute time,
-- so the caller can put it on its own monotonic clock. Numbers go out as strings (a Lua number
-- returned to Redis would be truncated to an integer).
--
-- KEYS: 1 rate (hash), 2 gcra (string), 3 pause (hash), 4 stats (hash), 5 maint (hash),
--       6 probe (string: the lease), 7 procs (sorted set: live processes)
-- ARGV: 1 mode: "admit" | "flush" | "curve"
--       2 now (client wall clock) or "" for the server's TIME
--       3 max_wait  4 beta  5 window  6 min_rate  7 growth  8 probe_initial  9 probe_max
--       10 max_pause  11 probe lease (ms)  12 process id  13 probe token of this admit
--       14 adaptive ("1" | "0")  15 slots given back  16 the rate this process last saw
--       ("" none), put back if the rate is missing (evicted)  17 number of reports, then 6 per
--       report: kind ("a" accepted, "r" refused, "m" maintenance, "n" no answer), seconds ago,
--       seconds since sent, retry-after ("" none), probe ("1" | "0"), probe token
-- "curve" mode: ARGV 2 now, 4-7 as above, 8 rate, 9 peak, 10 cut_at, 11 frozen_at ("" none):
--       returns the learned rate, to check that this curve is AdaptiveRate.rate().

local BUCKETS = 10
local BURST = 0.1
local PROBE_FACTOR = 2.5
local PROBE_INTERVALS_MAX = 64
local MIN_REFUSED = 2
local MIN_SHARE = 0.05
local RECUT_AFTER = 0.25
local PROBE_FOUND = 1.5
local PAUSE_FIRST = 0.1
local KEEP = 600
local LIVE = 10
-- slots are reserved up to this far ahead (further than in one process: every re-ask is a
-- round trip, and a fleet has many more callers queued)
local HORIZON = 0.5

local function fmt(x)
  return string.format('%.17g', x)
end

local beta = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local min_rate = tonumber(ARGV[6])
local growth = tonumber(ARGV[7])

local function curve(rate, peak, cut_at, frozen_at, now)
  local since = (frozen_at or now) - cut_at
  local k = (peak * (1 - beta) / growth) ^ (1 / 3)
  local grown = peak + growth * (since - k) ^ 3
  if since > k then
    grown = math.max(grown, peak * PROBE_FACTOR ^ math.min((since - k) / window, PROBE_INTERVALS_MAX))
  end
  return math.max(min_rate, rate, grown)
end

local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end

if ARGV[1] == 'curve' then
  local frozen = nil
  if ARGV[11] ~= '' then frozen = tonumber(ARGV[11]) end
  return fmt(curve(tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), frozen, now))
end

local max_wait = tonumber(ARGV[3])
local probe_initial = tonumber(ARGV[8])
local probe_max = tonumber(ARGV[9])
local max_pause = tonumber(ARGV[10])
local lease_ms = tonumber(ARGV[11])
local adaptive = ARGV[14] == '1'
local span = window / BUCKETS
local events = {}

-- the learned rate (absent fields: nothing learned, never cut, not frozen)
local r = redis.call('HMGET', KEYS[1], 'rate', 'max', 'cut', 'frozen', 'cuts', 'first', 'aok', 'aref')
local R = {
  rate = tonumber(r[1]), max = tonumber(r[2]) or 0, cut = tonumber(r[3]), frozen = tonumber(r[4]),
  cuts = tonumber(r[5]) or 0, first = tonumber(r[6]), aok = tonumber(r[7]) or 0,
  aref = tonumber(r[8]) or 0,
}
local rate_dirty = false
local restored = false

-- a learned rate found missing (evicted, or expired) is put back from the caller's last view
-- of it, as if just cut to it (no burst credit), never taken as "no limit known"
if adaptive and R.rate == nil and ARGV[16] ~= '' then
  R.rate = math.max(min_rate, tonumber(ARGV[16]))
  R.max = R.rate
  R.cut = now
  R.cuts = R.cuts + 1
  rate_dirty, restored = true, true
end

local function cut_at()
  return R.cut or -math.huge
end

local function rate_now(at)
  if R.rate == nil then return nil end
  return curve(R.rate, R.max, cut_at(), R.frozen, at)
end

-- answers counted in a ring of buckets over one window
local S = nil
local function stats()
  if S == nil then
    local fields = {}
    for i = 0, BUCKETS - 1 do
      fields[#fields + 1] = 'a' .. i
      fields[#fields + 1] = 'r' .. i
      fields[#fields + 1] = 's' .. i
    end
    local v = redis.call('HMGET', KEYS[4], unpack(fields))
    S = { a = {}, r = {}, s = {}, dirty = false }
    for i = 0, BUCKETS - 1 do
      S.a[i] = tonumber(v[3 * i + 1]) or 0
      S.r[i] = tonumber(v[3 * i + 2]) or 0
      S.s[i] = tonumber(v[3 * i + 3]) or -1
    end
  end
  return S
end

local function bucket(at)
  local s = stats()
  if R.first == nil then
    R.first = at
    rate_dirty = true
  end
  local stamp = math.floor(at / span)
  local index = stamp % BUCKETS
  if s.s[index] ~= stamp then
    s.s[index] = stamp
    s.a[index] = 0
    s.r[index] = 0
  end
  s.dirty = true
  return index
end

local function totals(at, buckets)
  local s = stats()
  local oldest = math.floor(at / span) - buckets + 1
  local accepted, refused = 0, 0
  for i = 0, BUCKETS - 1 do
    if s.s[i] >= oldest then
      accepted = accepted + s.a[i]
      refused = refused + s.r[i]
    end
  end
  return accepted, refused
end

local function too_fast(at)
  local since = at - cut_at()
  local ok, refused = R.aok, R.aref
  if window * RECUT_AFTER <= since and since < window and ok > 0 and refused >= MIN_REFUSED
      and refused >= MIN_SHARE * (ok + refused) then
    return ok / since
  end
  if since < window then return nil end
  local accepted
  accepted, refused = totals(at, BUCKETS)
  if accepted == 0 or refused < MIN_REFUSED or refused < MIN_SHARE * (accepted + refused) then
    return nil
  end
  local first = R.first or at
  if at - first < window then
    -- the first window: its start-up burst says nothing of the rate over time
    return accepted / math.max(at - first, window / 5)
  end
  local lately = totals(at, 2) / (span + at % span)
  return math.max(accepted / window, lately)
end

local tat = tonumber(redis.call('GET', KEYS[2]) or '')
local tat_dirty = false
if tat == nil and restored then
  tat, tat_dirty = now, true
end

local function rate_accepted(at, sent_at)
  local i = bucket(at)
  S.a[i] = S.a[i] + 1
  if sent_at > cut_at() then
    R.aok = R.aok + 1
    rate_dirty = true
  end
end

local function rate_refused(at, sent_at)
  local i = bucket(at)
  S.r[i] = S.r[i] + 1
  if sent_at > cut_at() then
    R.aref = R.aref + 1
    rate_dirty = true
  end
  local measured = too_fast(at)
  if measured == nil then return end
  local old = rate_now(at)
  local base = measured
  if old ~= nil then base = math.min(measured, old) end
  if old ~= nil and old > R.max and base < PROBE_FOUND * R.max then
    -- a probe refused not far above the old peak: half of what it measured above is believed
    base = math.max(R.max, (base + R.max) / 2)
  end
  R.max = math.max(min_rate, base)
  R.rate = math.max(min_rate, base * beta)
  R.cut = at
  R.cuts = R.cuts + 1
  R.aok, R.aref = 0, 0
  rate_dirty = true
  tat = at + 1 / R.rate + math.max(1 / R.rate, BURST)
  tat_dirty = true
  events[#events + 1] = 'rate'
  events[#events + 1] = old and fmt(old) or ''
  events[#events + 1] = fmt(R.rate)
end

-- the Retry-After pause
local p = redis.call('HMGET', KEYS[3], 'until', 'level', 'acc', 'set')
local P = { untl = tonumber(p[1]) or -math.huge, level = tonumber(p[2]) or 0, acc = tonumber(p[3]),
            set = tonumber(p[4]) or -math.huge }
local pause_dirty = false

-- the maintenance breaker; the probe lease is the key KEYS[6]
local m = redis.call('HMGET', KEYS[5], 'opened', 'next', 'interval', 'set')
local M = { opened = tonumber(m[1]), next = tonumber(m[2]) or 0, interval = tonumber(m[3]) or probe_initial,
            set = tonumber(m[4]) }
local maint_dirty = false

-- Every moment in the store was written on some clock: this host's, another client's (with
-- ARGV[2] given), or a former master's. None is honoured later than this call could have
-- written it itself, so that one host whose clock is ahead cannot hold the others back, and
-- what is pulled in is written back: a start (a cut, the first answer, an accept, a pause
-- or the breaker opening) is at most now; an end (a pause, the next probe) is at most its
-- own length and max_pause from now; the reserved slots (tat) reach at most a full horizon
-- and one interval more ahead at the current rate, or one burst past the pause.
local function at_most(t, field, most)
  if t[field] ~= nil and t[field] > most then
    t[field] = most
    return true
  end
  return false
end

local function end_at_most(t, untl, set)
  local moved = false
  if t[set] ~= nil and t[set] > now then
    t[untl] = now + math.min(math.max(0, t[untl] - t[set]), max_pause)
    t[set] = now
    moved = true
  end
  return at_most(t, untl, now + max_pause) or moved
end

for _, field in ipairs({ 'cut', 'frozen', 'first' }) do
  if at_most(R, field, now) then rate_dirty = true end
end
if at_most(P, 'acc', now) then pause_dirty = true end
if end_at_most(P, 'untl', 'set') then pause_dirty = true end
if at_most(M, 'opened', now) then maint_dirty = true end
if end_at_most(M, 'next', 'set') then maint_dirty = true end
if tat ~= nil and R.rate ~= nil then
  local interval = 1 / rate_now(now)
  local burst = math.max(interval, BURST)
  local most = now + math.max(burst, HORIZON) + burst + 2 * interval
  if P.untl > now then most = math.max(most, P.untl + math.max(1 / R.rate, BURST)) end
  if tat > most then
    tat = most
    tat_dirty = true
  end
end

local function drop_lease(token)
  if redis.call('GET', KEYS[6]) == token then redis.call('DEL', KEYS[6]) end
end

local function report(kind, at, sent_at, retry_after, probe, token)
  local adopted = nil
  if retry_after ~= nil and retry_after <= max_pause then adopted = retry_after end
  if kind == 'm' then
    local opened = M.opened == nil
    if opened then
      M.opened = at
      M.interval = probe_initial
    elseif probe then
      M.interval = math.min(probe_max, M.interval * 2)
    end
    if probe or opened or M.next < at then
      M.next = at + (adopted or M.interval)
      M.set = at
    end
    if probe then drop_lease(token) end
    maint_dirty = true
    if opened then
      if adaptive and R.frozen == nil then
        R.frozen = at
        rate_dirty = true
      end
      events[#events + 1] = 'open'
      events[#events + 1] = fmt(M.next - at)
      events[#events + 1] = ''
    end
    if adopted ~= nil then
      events[#events + 1] = 'pause'
      events[#events + 1] = fmt(adopted)
      events[#events + 1] = '455'
    end
    return
  end
  if probe then drop_lease(token) end
  if kind == 'n' then return end
  if M.opened ~= nil then
    local open_for = at - M.opened
    M.opened = nil
    maint_dirty = true
    redis.call('DEL', KEYS[6])
    if adaptive and R.frozen ~= nil then
      if R.cut ~= nil then R.cut = R.cut + at - R.frozen end
      R.frozen = nil
      rate_dirty = true
    end
    events[#events + 1] = 'closed'
    events[#events + 1] = fmt(open_for)
    events[#events + 1] = ''
  end
  if kind == 'a' then
    P.level = 0
    P.acc = at
    pause_dirty = true
    if adaptive then rate_accepted(at, sent_at) end
    return
  end
  if adaptive then rate_refused(at, sent_at) end
  -- a 429 to a request sent before the last pause began is that pause's news
  if adopted ~= nil and sent_at >= P.set then
    local pause = adopted
    if P.acc ~= nil and at - P.acc < window then
      local first = PAUSE_FIRST
      local learned = adaptive and rate_now(at) or nil
      if learned ~= nil then first = math.min(PAUSE_FIRST, 1 / learned) end
      pause = math.min(adopted, first * 2 ^ math.min(P.level, 30))
      P.level = P.level + 1
      pause_dirty = true
    end
    if at + pause > P.untl then
      P.untl = at + pause
      P.set = at
      pause_dirty = true
      if adaptive and R.rate ~= nil then
        -- no send before the pause ends, and no burst right after it
        local hold = P.untl + math.max(1 / R.rate, BURST)
        if tat == nil or tat < hold then
          tat = hold
          tat_dirty = true
        end
      end
      events[#events + 1] = 'pause'
      events[#events + 1] = fmt(pause)
      events[#events + 1] = '429'
    end
  end
end

local n = tonumber(ARGV[17])
for i = 0, n - 1 do
  local b = 18 + 6 * i
  local retry_after = nil
  if ARGV[b + 3] ~= '' then retry_after = tonumber(ARGV[b + 3]) end
  report(ARGV[b], now - tonumber(ARGV[b + 1]), now - tonumber(ARGV[b + 2]), retry_after,
    ARGV[b + 4] == '1', ARGV[b + 5])
end

local given_back = tonumber(ARGV[15])
if given_back > 0 and tat ~= nil and R.rate ~= nil then
  tat = math.max(now, tat - given_back / rate_now(now))
  tat_dirty = true
end

-- the decision: verdict, delay, ...
local verdict, delay = 'go', 0
if ARGV[1] == 'admit' then
  if M.opened ~= nil then
    if redis.call('EXISTS', KEYS[6]) == 1 then
      verdict, delay = 'wait_probe', math.max(0, M.next - now)
    elseif now >= M.next then
      if redis.call('SET', KEYS[6], ARGV[13], 'PX', lease_ms, 'NX') then
        verdict = 'probe'
      else
        verdict = 'wait_probe'
      end
    else
      verdict, delay = 'wait', M.next - now
    end
  elseif now < P.untl then
    verdict, delay = 'pause', P.untl - now
  elseif adaptive and R.rate ~= nil then
    local rate = rate_now(now)
    local interval = 1 / rate
    local burst = math.max(interval, BURST)
    local send_at = math.max(now, (tat or -math.huge) - burst)
    if send_at - now > math.min(max_wait, math.max(burst, HORIZON)) then
      verdict, delay = 'later', send_at - now
    else
      tat = math.max(tat or -math.huge, now) + interval
      tat_dirty = true
      verdict, delay = 'slot', send_at - now
    end
  end
end

-- write back what changed; every key expires
if rate_dirty then
  local fields = { 'max', fmt(R.max), 'cuts', R.cuts, 'aok', R.aok, 'aref', R.aref }
  for _, name in ipairs({ 'rate', 'cut', 'frozen', 'first' }) do
    if R[name] ~= nil then
      fields[#fields + 1] = name
      fields[#fields + 1] = fmt(R[name])
    end
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  if R.frozen == nil then redis.call('HDEL', KEYS[1], 'frozen') end
  redis.call('EXPIRE', KEYS[1], KEEP)
end
if tat_dirty then
  redis.call('SET', KEYS[2], fmt(tat), 'PX', math.max(1, math.ceil((tat - now + 1) * 1000)))
end
if S ~= nil and S.dirty then
  local fields = {}
  for i = 0, BUCKETS - 1 do
    fields[#fields + 1] = 'a' .. i
    fields[#fields + 1] = S.a[i]
    fields[#fields + 1] = 'r' .. i
    fields[#fields + 1] = S.r[i]
    fields[#fields + 1] = 's' .. i
    fields[#fields + 1] = S.s[i]
  end
  redis.call('HSET', KEYS[4], unpack(fields))
  redis.call('EXPIRE', KEYS[4], math.max(10, math.ceil(2 * window)))
end
if pause_dirty then
  local fields = { 'level', P.level }
  if P.untl > -math.huge then
    fields[#fields + 1] = 'until'
    fields[#fields + 1] = fmt(P.untl)
  end
  if P.acc ~= nil then
    fields[#fields + 1] = 'acc'
    fields[#fields + 1] = fmt(P.acc)
  end
  if P.set > -math.huge then
    fields[#fields + 1] = 'set'
    fields[#fields + 1] = fmt(P.set)
  end
  redis.call('HSET', KEYS[3], unpack(fields))
  redis.call('EXPIRE', KEYS[3], KEEP)
end
if maint_dirty then
  if M.opened == nil then
    redis.call('DEL', KEYS[5])
  else
    redis.call('HSET', KEYS[5], 'opened', fmt(M.opened), 'next', fmt(M.next),
      'interval', fmt(M.interval), 'set', fmt(M.set or M.opened))
    redis.call('EXPIRE', KEYS[5], KEEP)
  end
end
redis.call('ZADD', KEYS[7], now, ARGV[12])
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - LIVE)
redis.call('EXPIRE', KEYS[7], 3 * LIVE)
local live = redis.call('ZCARD', KEYS[7])

local rate = rate_now(now)
local result = {
  verdict, fmt(delay), tostring(R.cuts), rate and fmt(rate) or '',
  fmt(math.max(0, P.untl - now)), M.opened and '1' or '0', fmt(math.max(0, M.next - now)),
  tostring(live),
}
for _, e in ipairs(events) do result[#result + 1] = e end
return result
