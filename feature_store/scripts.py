"""The Lua scripts Arbiter runs in Redis (6.2-compatible: EVAL/EVALSHA, no functions).
(Over 400 lines: the Lua of eleven scripts, each beside what it does.)

Every script touches the keys of one hash tag only (a customer's, one shard of the
decision log's, the volume counters') or a single key, so each runs atomically on a
single node of a cluster too. Shared pieces:

- windowed counters live in the customer's ``win`` hash as ring slots: field
  ``<name>|<bucket seconds>|<slot>``, value ``<bucket number>:<count>``, for three
  resolutions: 12 slots of 5 minutes (the 1 h window), 24 of 1 hour (24 h), 7 of 1 day
  (7 d). A slot is reused when its bucket falls out of the window, so the hash never
  holds more than 43 fields per counter name, and windows slide at bucket granularity.
- a contact is a member ``<decision_id>|<offer_id>|<channel>`` of the ``contacts`` sorted
  set (score: when) or, for an inbound impression reserved at decision time and not yet
  reported, of ``pending`` (score: when the reservation lapses). ``pending`` holds at most
  one member per offer: a decision showing a pending offer again extends that member and
  notes itself in ``reshown``, and its impression converts that same member, once.
"""

from __future__ import annotations

from feature_store import keys


def _lua_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# The key layout's names as Lua locals, so the scripts spell no prefix of their own.
_NAMES = {
    "N": keys.LIFETIME_COUNT,
    "E": keys.EVENT_COUNT,
    "C": keys.CHANNEL_COUNT,
    "K": keys.CATEGORY_COUNT,
    "O": keys.OUTCOME_COUNT,
    "TS": keys.STAMP,
    "LAST_SEEN": keys.LAST_SEEN,
    "LAST_CATEGORY": keys.LAST_CATEGORY,
    "STARTED": keys.SESSION_STARTED,
    "COOL": keys.COOLDOWN,
    "HELD": keys.HELD,
}
_NUMBERS = {"RESHOWN_KEPT": keys.RESHOWN_KEPT}
_RES = ", ".join(f"{{{seconds}, {slots}}}" for _, seconds, slots in keys.SLIDING_WINDOWS)

_PRELUDE = (
    "".join(f"local {name} = {_lua_string(value)}\n" for name, value in _NAMES.items())
    + "".join(f"local {name} = {value}\n" for name, value in _NUMBERS.items())
    + f"local RES = {{{_RES}}}\n"
    + """

local function bump(key, name, ts, by)
  for _, r in ipairs(RES) do
    local bucket = math.floor(ts / r[1])
    local field = name .. '|' .. r[1] .. '|' .. (bucket % r[2])
    local cur = redis.call('HGET', key, field)
    local b, n = -1, 0
    if cur then
      local sep = string.find(cur, ':', 1, true)
      b = tonumber(string.sub(cur, 1, sep - 1))
      n = tonumber(string.sub(cur, sep + 1))
    end
    if b == bucket then
      redis.call('HSET', key, field, b .. ':' .. (n + by))
    elseif bucket > b then
      redis.call('HSET', key, field, bucket .. ':' .. by)
    end
    -- else: the event is older than the slot's bucket, outside every window it feeds
  end
end

local function split(member)
  local a = string.find(member, '|', 1, true)
  local b = string.find(member, '|', a + 1, true)
  return string.sub(member, 1, a - 1), string.sub(member, a + 1, b - 1), string.sub(member, b + 1)
end
"""
)

# KEYS: rt, events, win, session, event rate, consent[, event idempotency key]
# ARGV: ts, event type (as counted), channel, category (as counted, '' if none), record
#       json, rt ttl, events kept, session ttl, now (unix s), events allowed a second,
#       count event type x category pairs (1/0: only when a feature reads one), consent
#       ttl, idempotency key ttl, then pairs of consent channel and "<1|0>|<ts>|<via>"
#       (opt_in / opt_out)
# Returns 1; 0 when the customer is over its event rate; 2 when the idempotency key was
# seen already (nothing is changed in either case).
EVENT = (
    _PRELUDE
    + """
-- An event sent again under its idempotency key (KEYS[7], when given) was recorded
-- already: nothing to do, and it does not count against the rate.
if #KEYS >= 7 and redis.call('EXISTS', KEYS[7]) == 1 then return 2 end
local second = math.floor(tonumber(ARGV[9]))
local rate = redis.call('GET', KEYS[5])
local used = 0
if rate then
  local sep = string.find(rate, ':', 1, true)
  if tonumber(string.sub(rate, 1, sep - 1)) == second then
    used = tonumber(string.sub(rate, sep + 1))
  end
end
if used >= tonumber(ARGV[10]) then return 0 end
redis.call('SET', KEYS[5], second .. ':' .. (used + 1), 'EX', 2)
if #KEYS >= 7 then redis.call('SET', KEYS[7], '1', 'EX', ARGV[13]) end
local ts, etype, channel, category = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
redis.call('HINCRBY', KEYS[1], N .. etype, 1)
redis.call('HINCRBY', KEYS[1], C .. channel, 1)
for _, f in ipairs({LAST_SEEN, TS .. etype}) do
  local seen = tonumber(redis.call('HGET', KEYS[1], f) or '0')
  if ts > seen then redis.call('HSET', KEYS[1], f, ARGV[1]) end
end
if category ~= '' then redis.call('HSET', KEYS[1], LAST_CATEGORY, category) end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('LPUSH', KEYS[2], ARGV[5])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[7]) - 1)
redis.call('EXPIRE', KEYS[2], ARGV[6])
bump(KEYS[3], E .. etype, ts, 1)
bump(KEYS[3], C .. channel, ts, 1)
if category ~= '' then
  bump(KEYS[3], K .. category, ts, 1)
  if ARGV[11] == '1' then bump(KEYS[3], E .. etype .. ':' .. category, ts, 1) end
end
redis.call('EXPIRE', KEYS[3], ARGV[6])
-- A session is the run of events without a gap longer than the session ttl.
redis.call('HINCRBY', KEYS[4], E .. etype, 1)
if category ~= '' then redis.call('HINCRBY', KEYS[4], K .. category, 1) end
redis.call('HSETNX', KEYS[4], STARTED, ARGV[1])
redis.call('EXPIRE', KEYS[4], ARGV[8])
-- Consent: a newer event replaces an older one for the channel, never the reverse.
for i = 14, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[6], ARGV[i])
  local at = current and tonumber(string.match(current, '^[01]|([^|]+)|')) or -1
  if ts >= at then redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 1]) end
end
if #ARGV >= 14 then redis.call('EXPIRE', KEYS[6], ARGV[12]) end
return 1
"""
)

# KEYS: profile, rt, win, session, contacts, pending, policy, consent
# ARGV: now, contacts horizon (unix seconds; older contacts are not needed)
# Returns {profile fields v s a u, rt hash, window counts, session hash, contacts and
# pending (with scores), policy hash, consent hash}; window counts are flat: name,
# count 1h, count 24h, count 7d, ...
READ = (
    _PRELUDE
    + """
local now = tonumber(ARGV[1])
local sums, order = {}, {}
local win = redis.call('HGETALL', KEYS[3])
for i = 1, #win, 2 do
  local name, res, _ = string.match(win[i], '^(.*)|(%d+)|(%d+)$')
  if name then
    local value = win[i + 1]
    local sep = string.find(value, ':', 1, true)
    local bucket = tonumber(string.sub(value, 1, sep - 1))
    local count = tonumber(string.sub(value, sep + 1))
    res = tonumber(res)
    for k, r in ipairs(RES) do
      if r[1] == res and bucket > math.floor(now / res) - r[2] then
        if not sums[name] then sums[name] = {0, 0, 0}; table.insert(order, name) end
        sums[name][k] = sums[name][k] + count
      end
    end
  end
end
local windows = {}
for _, name in ipairs(order) do
  local s = sums[name]
  table.insert(windows, name)
  table.insert(windows, tostring(s[1]))
  table.insert(windows, tostring(s[2]))
  table.insert(windows, tostring(s[3]))
end
return {
  redis.call('HMGET', KEYS[1], 'v', 's', 'a', 'u'),
  redis.call('HGETALL', KEYS[2]),
  windows,
  redis.call('HGETALL', KEYS[4]),
  redis.call('ZRANGEBYSCORE', KEYS[5], ARGV[2], '+inf', 'WITHSCORES'),
  redis.call('ZRANGEBYSCORE', KEYS[6], ARGV[1], '+inf', 'WITHSCORES'),
  redis.call('HGETALL', KEYS[7]),
  redis.call('HGETALL', KEYS[8]),
}
"""
)

# The Lua port of engine/core/contact_reservation.admit (the rule's one home; the contract
# suite holds the two to one behaviour), plus the recording:
# Reserves contacts for a decision's actions, re-checking every cap, cool-down and
# suppression atomically, so two replicas deciding at once cannot both exceed a cap, and
# an offer declined meanwhile is not made. An inbound offer already pending (shown by an
# earlier decision, impression not reported) takes no new place: its member is extended
# and the decision noted in ``reshown``; caps apply to new places only.
# KEYS: contacts, pending, policy, reshown
# ARGV: now, decision id, channel, outbound (1/0), pending expiry, horizon seconds,
#       channel caps ("window:max,..." or ''), marketing budget caps (same), the budget's
#       channels ("email,sms" or ''), then triples of offer id, offer caps, suppressed
#       once accepted (1/0)
# Returns the offer ids reserved, in the order given.
RESERVE = (
    _PRELUDE
    + """
local now = tonumber(ARGV[1])
local decision, channel, outbound = ARGV[2], ARGV[3], ARGV[4] == '1'
local function caps(spec)
  local out = {}
  for w, m in string.gmatch(spec, '(%d+):(%d+)') do
    table.insert(out, {tonumber(w), tonumber(m)})
  end
  return out
end
local contacts = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[6]), '+inf', 'WITHSCORES')
local pending = redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')
local shown = {}  -- offer -> its pending member
for _, m in ipairs(pending) do
  local _, o, _ = split(m)
  shown[o] = m
end
local function count(offer, chs, window)
  -- offer: contacts of that offer; chs (a set): distinct decisions on those channels
  local n, seen = 0, {}
  for i = 1, #contacts, 2 do
    if tonumber(contacts[i + 1]) > now - window then
      local d, o, c = split(contacts[i])
      if (offer and o == offer) or (chs and chs[c] and not seen[d]) then
        n = n + 1; seen[d] = true
      end
    end
  end
  for _, m in ipairs(pending) do
    local d, o, c = split(m)
    if (offer and o == offer) or (chs and chs[c] and not seen[d]) then
      n = n + 1; seen[d] = true
    end
  end
  return n
end
local channel_full = false
for _, cap in ipairs(caps(ARGV[7])) do
  if count(nil, {[channel] = true}, cap[1]) >= cap[2] then channel_full = true end
end
local budget = {}
for c in string.gmatch(ARGV[9], '[^,]+') do budget[c] = true end
for _, cap in ipairs(caps(ARGV[8])) do
  if count(nil, budget, cap[1]) >= cap[2] then channel_full = true end
end
local reserved = {}
for i = 10, #ARGV, 3 do
  local offer = ARGV[i]
  local ok = tonumber(redis.call('HGET', KEYS[3], COOL .. offer) or '0') <= now
  if ARGV[i + 2] == '1' and redis.call('HEXISTS', KEYS[3], HELD .. offer) == 1 then
    ok = false
  end
  local again = ok and not outbound and shown[offer]
  if again then
    redis.call('ZADD', KEYS[2], 'GT', tonumber(ARGV[5]), again)
    local holder = split(again)
    if holder ~= decision then
      if redis.call('HLEN', KEYS[4]) >= RESHOWN_KEPT then redis.call('DEL', KEYS[4]) end
      redis.call('HSET', KEYS[4], decision .. '|' .. offer, holder)
      redis.call('EXPIRE', KEYS[4], ARGV[6])
    end
    table.insert(reserved, offer)
  elseif ok and not channel_full then
    for _, cap in ipairs(caps(ARGV[i + 1])) do
      if count(offer, nil, cap[1]) >= cap[2] then ok = false end
    end
    if ok then
      local member = decision .. '|' .. offer .. '|' .. channel
      if outbound then
        redis.call('ZADD', KEYS[1], now, member)
        table.insert(contacts, member); table.insert(contacts, tostring(now))
      else
        redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), member)
        table.insert(pending, member)
        shown[offer] = member
      end
      table.insert(reserved, offer)
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[6]))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return reserved
"""
)

# The volume limits' claim: engine/core/contact_reservation.claim in Lua. A channel
# counter at its max lets nothing through; else each offer whose counters all have room
# takes one on each, and the channel's counters take one.
# KEYS: the channel's counters, then each offer's
# ARGV: channel counters n, then (max, keep seconds) per channel counter, then per offer:
#       offer id, its counters n, (max, keep seconds) per counter
# Returns {1} when the channel is full, else {0, refused offer ids...}
VOLUME = """
local function used(k) return tonumber(redis.call('GET', k) or '0') end
local nc = tonumber(ARGV[1])
local take = {}
local a = 2
for i = 1, nc do
  if used(KEYS[i]) >= tonumber(ARGV[a]) then return {1} end
  table.insert(take, {KEYS[i], ARGV[a + 1]})
  a = a + 2
end
local k = nc + 1
local refused = {0}
while a <= #ARGV do
  local offer, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local ok = true
  for j = 0, n - 1 do
    if used(KEYS[k + j]) >= tonumber(ARGV[a + 2 * j]) then ok = false end
  end
  for j = 0, n - 1 do
    if ok then table.insert(take, {KEYS[k + j], ARGV[a + 2 * j + 1]}) end
  end
  if not ok then table.insert(refused, offer) end
  k = k + n
  a = a + 2 * n
end
for _, t in ipairs(take) do
  redis.call('INCR', t[1])
  redis.call('EXPIRE', t[1], t[2])
end
return refused
"""

# Gives back one contact on each counter (a claim the customer's own re-check refused),
# never below zero. KEYS: the counters. Returns how many were given back.
VOLUME_BACK = """
local n = 0
for _, k in ipairs(KEYS) do
  if tonumber(redis.call('GET', k) or '0') > 0 then
    redis.call('DECR', k)
    n = n + 1
  end
end
return n
"""

# First report of an idempotency key: take a lease on it ("pending:<token>:<until>") and
# apply the outcome to the customer's own structures; the caller then appends to the
# global outcome log (another slot on a cluster) and, if it still holds the lease, stores
# the log id under the key (FINISH). A report finding a live lease is a duplicate arriving
# while the first is being written ("busy"); one finding a lapsed lease (an attempt that
# died between the two steps) takes the lease and appends again, without applying the
# effects twice. So concurrent duplicates are appended once.
# An impression (any response counts as one) is counted once per showing: a decision that
# showed a pending offer again (``reshown``) counts as that pending contact.
# KEYS: idem, outcomes, rt, win, contacts, pending, policy, reshown
# ARGV: idem ttl, summary json, outcomes kept, history ttl, outcome, rt ttl, ts,
#       decision id, offer id, cool-down until (0: none), suppress (1/0),
#       count as impression (1/0), contacts horizon seconds, policy ttl,
#       lease token, now, lease seconds
# Returns {"done", log id} | {"busy", ""} | {"append", lease}
OUTCOME = (
    _PRELUDE
    + """
local lease = 'pending:' .. ARGV[15] .. ':' .. (tonumber(ARGV[16]) + tonumber(ARGV[17]))
local current = redis.call('GET', KEYS[1])
if current then
  if current ~= 'pending' and string.sub(current, 1, 8) ~= 'pending:' then
    return {'done', current}
  end
  local until_ = tonumber(string.match(current, ':([%d%.]+)$') or '0')
  if until_ > tonumber(ARGV[16]) then return {'busy', ''} end
  redis.call('SET', KEYS[1], lease, 'KEEPTTL')
  return {'append', lease}
end
redis.call('SET', KEYS[1], lease, 'EX', ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
local ts, outcome, decision, offer = tonumber(ARGV[7]), ARGV[5], ARGV[8], ARGV[9]
redis.call('HINCRBY', KEYS[3], O .. outcome, 1)
redis.call('EXPIRE', KEYS[3], ARGV[6])
bump(KEYS[4], O .. outcome, ts, 1)
redis.call('EXPIRE', KEYS[4], ARGV[6])
if tonumber(ARGV[10]) > 0 then
  local until_ = tonumber(redis.call('HGET', KEYS[7], COOL .. offer) or '0')
  if tonumber(ARGV[10]) > until_ then redis.call('HSET', KEYS[7], COOL .. offer, ARGV[10]) end
end
if ARGV[11] == '1' then redis.call('HSETNX', KEYS[7], HELD .. offer, ARGV[7]) end
redis.call('EXPIRE', KEYS[7], ARGV[14])
if ARGV[12] == '1' then
  local shown = redis.call('HGET', KEYS[8], decision .. '|' .. offer)
  local prefix = (shown or decision) .. '|' .. offer .. '|'
  local counted = false
  for _, m in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    if string.sub(m, 1, #prefix) == prefix then counted = true end
  end
  if not counted then
    local member = prefix
    for _, m in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do
      if string.sub(m, 1, #prefix) == prefix then
        member = m
        redis.call('ZREM', KEYS[6], m)
      end
    end
    redis.call('ZADD', KEYS[5], ts, member)
    redis.call('EXPIRE', KEYS[5], ARGV[13])
  end
end
return {'append', lease}
"""
)

# Stores the outcome's log id under its idempotency key, if the caller still holds the
# lease it took (a caller slower than its lease lost it to a retry).
# KEYS: idem; ARGV: lease, log id. Returns 1 when stored.
FINISH_OUTCOME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""

# Appends decisions to one shard of the decision log, each decision id once: a batch sent
# again (its reply lost to a Redis restart, or a log process restarted before it
# acknowledged) adds nothing. The ids written lately are kept in a sorted set beside the
# shard (same hash tag), scored by when (the appender trims it with the streams).
# KEYS: the shard's stream, its recent ids; ARGV: max length, now, then (decision id,
# field, entry) per decision. Returns how many were appended.
APPEND_DECISIONS = """
local written = 0
for i = 3, #ARGV, 3 do
  if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', ARGV[i + 1], ARGV[i + 2])
    written = written + 1
  end
end
return written
"""

# Releases a lock (the trainer's) only when it is still held with the caller's token.
# KEYS: the lock; ARGV: the token. Returns 1 when released.
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Moves a customer's contacts (sorted set, scored by time) and cool-down ends back by
# ARGV[1] seconds: the simulation lets a day pass in seconds.
# KEYS: contacts, policy
AGE = (
    _PRELUDE
    + """
local contacts = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #contacts, 2 do
  redis.call('ZADD', KEYS[1], tonumber(contacts[i + 1]) - ARGV[1], contacts[i])
end
local policy = redis.call('HGETALL', KEYS[2])
for i = 1, #policy, 2 do
  if string.sub(policy[i], 1, #COOL) == COOL then
    redis.call('HSET', KEYS[2], policy[i], tonumber(policy[i + 1]) - ARGV[1])
  end
end
return 0
"""
)
