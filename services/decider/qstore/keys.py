"""Where a device's Q table lives in Redis (``Keys``) and the Lua scripts that change it.

The layout and the protocol are described in ``services.decider.qstore``. How rows are packed is
shared by the scripts below and ``codec`` (Python's reader and encoder): they change together.

Packed rows: the states of one Table I network-bin combination (``GROUP`` = 64 states: the runtime
variance bins vary fastest in the state index) share one string, ``Keys.rows(g)``; a state's record
sits at ``(state % GROUP) * stride``, ``stride = cap * 4 + cap / 2``::

    cap float32 little-endian Q values, by action index    then    cap / 2 bytes of 4-bit fields:
    action i in byte i // 2 (low nibble for even i): 0 = no entry, k = k - 1 visits (saturating)

``cap`` (``Keys.cap``, always even) is the number of action slots per record and ``Keys.aidx`` maps
each action id to its slot, in the order the device's actions first appeared. A new action past
``cap`` grows every record in one script (``relayout``): rare, only when a runner offers a new target.
``Keys.vers`` holds every state's row version, 3,072 float64 (0: no row).

The update script rounds the new Q value to float32 with ``struct.pack('<f')`` -- the same C cast as
Python's ``struct`` -- and publishes it with 17 significant digits, so Python (``maths.f32``) and Lua
compute bit-identical values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.core.policies.qlearning import VISITS_MAX
from services.core.policies.qlearning.corrections import N_CAP
from services.core.state import N_STATES

GROUP = 64
N_GROUPS = N_STATES // GROUP

# Helpers every script carries (a Redis script cannot call another).
_PRELUDE = f"""
local GROUP, NGROUPS, NSTATES, VMAX, NCAP = {GROUP}, {N_GROUPS}, {N_STATES}, {VISITS_MAX}, {N_CAP!r}
local function stride(cap) return cap * 4 + cap / 2 end
local function rows_key(prefix, s) return prefix .. ':rows:' .. math.floor(s / GROUP) end
local function relayout(prefix, old, new)
  if old == 0 then return end
  local os, qpad, npad = stride(old), string.rep('\\0', (new - old) * 4), string.rep('\\0', (new - old) / 2)
  for g = 0, NGROUPS - 1 do
    local key = prefix .. ':rows:' .. g
    local s = redis.call('GET', key)
    if s then
      local parts = {{}}
      for r = 0, GROUP - 1 do
        local o = r * os
        parts[#parts + 1] = string.sub(s, o + 1, o + old * 4) .. qpad .. string.sub(s, o + old * 4 + 1, o + os) .. npad
      end
      redis.call('SET', key, table.concat(parts))
    end
  end
end
-- Slot of every name (new names get the next slots; the records grow when cap is exceeded).
local function ensure(aidx, capkey, prefix, names)
  local got = redis.call('HMGET', aidx, unpack(names))
  local idx, total = {{}}, nil
  for j = 1, #names do
    local a, v = names[j], got[j]
    if v then
      idx[a] = tonumber(v)
    elseif idx[a] == nil then
      if total == nil then total = redis.call('HLEN', aidx) end
      redis.call('HSET', aidx, a, total)
      idx[a] = total
      total = total + 1
    end
  end
  local cap = tonumber(redis.call('GET', capkey) or '0')
  if total ~= nil and total > cap then
    local new = total + total % 2
    relayout(prefix, cap, new)
    redis.call('SET', capkey, new)
    cap = new
  end
  return idx, cap
end
local function record(key, s, st)
  local o = (s % GROUP) * st
  return redis.call('GETRANGE', key, o, o + st - 1)
end
local function code_of(rec, i, cap)
  local b = string.byte(rec, cap * 4 + math.floor(i / 2) + 1)
  if b == nil then return 0 end
  if i % 2 == 0 then return b % 16 end
  return math.floor(b / 16)
end
-- (Q, visits) of slot i, or nil when there is no entry.
local function entry(rec, i, cap)
  local c = code_of(rec, i, cap)
  if c == 0 then return nil, 0 end
  return (struct.unpack('<f', rec, i * 4 + 1)), c - 1
end
local function ensure_group(key, st)
  if redis.call('EXISTS', key) == 0 then redis.call('SETRANGE', key, GROUP * st - 1, '\\0') end
end
local function write_entry(key, rec, s, i, st, cap, packed, n)
  local o = (s % GROUP) * st
  redis.call('SETRANGE', key, o + i * 4, packed)
  local bo = cap * 4 + math.floor(i / 2)
  local b = string.byte(rec, bo + 1) or 0
  if i % 2 == 0 then b = b - b % 16 + n + 1 else b = b % 16 + (n + 1) * 16 end
  redis.call('SETRANGE', key, o + bo, string.char(b))
end
local function ensure_vers(vers)
  if redis.call('EXISTS', vers) == 0 then redis.call('SETRANGE', vers, NSTATES * 8 - 1, '\\0') end
end
local function read_ver(vers, s)
  local raw = redis.call('GETRANGE', vers, s * 8, s * 8 + 7)
  if #raw < 8 then return 0 end
  return (struct.unpack('<d', raw))
end
"""

UPDATE_LUA = (
    _PRELUDE
    + """
-- KEYS: 1 aidx  2 cap  3 vers  4 version  5 applied  6 corr
-- One update's ARGV (a block of the batch's, below):
--       1 prefix  2 state  3 action  4 reward  5 lr  6 discount  7 init  8 token  9 seq  10 channel
--       11 next state  12 k (correction keys, 0..2)  13.. the k keys, then (k > 0) x_lat x_energy lr_floor
--       then pairs (next action, its initial value)
local function one(ARGV, msgs)
  local seq = tonumber(ARGV[9])
  local last = tonumber(redis.call('HGET', KEYS[5], ARGV[8]) or '0')
  if last >= seq then
    return {'dup'}
  end
  if last < seq - 1 then
    -- an earlier update of this token is missing: Redis lost it (restart); the writer replays
    return {'gap', tostring(last)}
  end
  redis.call('HSET', KEYS[5], ARGV[8], ARGV[9])
  local prefix, s, s2, a = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[11]), ARGV[3]
  local k = tonumber(ARGV[12])
  local base = 13 + k
  if k > 0 then base = base + 3 end
  local names = {a}
  for t = base, #ARGV, 2 do names[#names + 1] = ARGV[t] end
  local idx, cap = ensure(KEYS[1], KEYS[2], prefix, names)
  local st = stride(cap)
  local key = rows_key(prefix, s)
  ensure_group(key, st)
  local rec = record(key, s, st)
  local i = idx[a]
  local q, n = entry(rec, i, cap)
  if q == nil then q = tonumber(ARGV[7]) end
  local best = 0
  if #ARGV >= base then
    local rec2 = rec
    if s2 ~= s then rec2 = record(rows_key(prefix, s2), s2, st) end
    local j = 0
    for t = base, #ARGV, 2 do
      j = j + 1
      local v = entry(rec2, idx[ARGV[t]], cap)
      if v == nil then v = tonumber(ARGV[t + 1]) end
      if j == 1 or v > best then best = v end
    end
  end
  local new = q + tonumber(ARGV[5]) * (tonumber(ARGV[4]) + tonumber(ARGV[6]) * best - q)
  local packed = struct.pack('<f', new)
  new = struct.unpack('<f', packed)
  n = math.min(n + 1, VMAX)
  write_entry(key, rec, s, i, st, cap, packed, n)
  ensure_vers(KEYS[3])
  local prev = read_ver(KEYS[3], s)
  local ver = redis.call('INCR', KEYS[4])
  redis.call('SETRANGE', KEYS[3], s * 8, struct.pack('<d', ver))
  local qs = string.format('%.17g', new)
  msgs[#msgs + 1] = ('u|' .. s .. '|' .. a .. '|' .. qs .. '|' .. n .. '|' .. ver .. '|' .. prev)
  if k > 0 then
    local xl, xe, floor = tonumber(ARGV[13 + k]), tonumber(ARGV[14 + k]), tonumber(ARGV[15 + k])
    for t = 13, 12 + k do
      local ck = ARGV[t]
      local raw = redis.call('HGET', KEYS[6], ck)
      local cn, ml, vl, me, ve = 0, 0, 0, 0, 0
      if raw then cn, ml, vl, me, ve = struct.unpack('<ddddd', raw) end
      -- services.core.policies.qlearning.corrections.correction_step, term for term
      cn = math.min(cn + 1, NCAP)
      local lr = math.max(floor, 1 / cn)
      local d = xl - ml
      ml = ml + lr * d
      vl = (1 - lr) * (vl + lr * d * d)
      local e = xe - me
      me = me + lr * e
      ve = (1 - lr) * (ve + lr * e * e)
      redis.call('HSET', KEYS[6], ck, struct.pack('<dddddd', cn, ml, vl, me, ve, ver))
      local f = '%.17g'
      msgs[#msgs + 1] = ('c|' .. ver .. '|' .. string.format(f, cn) .. '|' .. string.format(f, ml) .. '|'
        .. string.format(f, vl) .. '|' .. string.format(f, me) .. '|' .. string.format(f, ve) .. '|' .. ck)
    end
  end
  return {qs, n, ver, prev}
end
-- The batch: ARGV[1] is a JSON array of updates, each its ARGV as above (strings), applied in order as
-- if each were a call of its own; their invalidations leave in one message, newline-separated.
local out, msgs, channel = {}, {}, nil
for _, A in ipairs(cjson.decode(ARGV[1])) do
  channel = channel or A[10]
  out[#out + 1] = one(A, msgs)
end
if #msgs > 0 then redis.call('PUBLISH', channel, table.concat(msgs, '\\n')) end
return out
"""
)

# Bulk write of one row's entries (import, transfer): entries given are overwritten, others kept.
PUT_ROW_LUA = (
    _PRELUDE
    + """
-- KEYS: 1 aidx  2 cap   ARGV: 1 prefix  2 state  then triples (action, Q, visits)
local prefix, s = ARGV[1], tonumber(ARGV[2])
local names = {}
for t = 3, #ARGV, 3 do names[#names + 1] = ARGV[t] end
if #names == 0 then return 0 end
local idx, cap = ensure(KEYS[1], KEYS[2], prefix, names)
local st = stride(cap)
local key = rows_key(prefix, s)
ensure_group(key, st)
local rec = record(key, s, st)
local qs, codes = {}, {}
for i = 0, cap - 1 do
  qs[i + 1] = string.sub(rec, i * 4 + 1, i * 4 + 4)
  codes[i + 1] = code_of(rec, i, cap)
end
for t = 3, #ARGV, 3 do
  local i = idx[ARGV[t]]
  qs[i + 1] = struct.pack('<f', tonumber(ARGV[t + 1]))
  codes[i + 1] = math.min(tonumber(ARGV[t + 2]), VMAX) + 1
end
local nb = {}
for i = 0, cap - 1, 2 do nb[#nb + 1] = string.char(codes[i + 1] + codes[i + 2] * 16) end
redis.call('SETRANGE', key, (s % GROUP) * st, table.concat(qs) .. table.concat(nb))
return #names
"""
)

# Delete every row of the namespace (and, with ARGV[2] == '1', the learned corrections).
CLEAR_LUA = (
    _PRELUDE
    + """
-- KEYS: 1 vers  2 corr   ARGV: 1 key prefix ("autoscale:{dev}")  2 '1': the corrections too
local raw = redis.call('GET', KEYS[1])
local rows = 0
if raw then
  for s = 0, NSTATES - 1 do
    if struct.unpack('<d', raw, s * 8 + 1) ~= 0 then rows = rows + 1 end
  end
end
for g = 0, NGROUPS - 1 do redis.call('DEL', ARGV[1] .. ':rows:' .. g) end
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
return rows
"""
)

# End of a bulk write: one new version for every touched state, then one reload message.
BUMP_LUA = (
    _PRELUDE
    + """
-- KEYS: 1 vers  2 version   ARGV: 1 channel, 2.. states
local v = redis.call('INCR', KEYS[2])
if #ARGV >= 2 then ensure_vers(KEYS[1]) end
local packed = struct.pack('<d', v)
for i = 2, #ARGV do
  redis.call('SETRANGE', KEYS[1], tonumber(ARGV[i]) * 8, packed)
end
redis.call('PUBLISH', ARGV[1], '*|' .. v)
return v
"""
)

# Some rows with their versions and the layout, in one atomic read.
READ_ROWS_LUA = (
    _PRELUDE
    + """
-- KEYS: 1 aidx  2 cap  3 vers   ARGV: 1 prefix, 2.. states
-- -> {cap, HGETALL aidx, then per state: record ('' where none), version (bytes)}
local cap = tonumber(redis.call('GET', KEYS[2]) or '0')
local out = {cap, redis.call('HGETALL', KEYS[1])}
local st = stride(cap)
for i = 2, #ARGV do
  local s = tonumber(ARGV[i])
  if cap > 0 then out[#out + 1] = record(rows_key(ARGV[1], s), s, st) else out[#out + 1] = '' end
  out[#out + 1] = redis.call('GETRANGE', KEYS[3], s * 8, s * 8 + 7)
end
return out
"""
)


# Give every listed action a slot (in the order given), growing the records if needed.
REGISTER_LUA = (
    _PRELUDE
    + """
-- KEYS: 1 aidx  2 cap   ARGV: 1 prefix, 2.. action ids   -> cap
local names = {}
for i = 2, #ARGV do names[#names + 1] = ARGV[i] end
if #names == 0 then return tonumber(redis.call('GET', KEYS[2]) or '0') end
local _, cap = ensure(KEYS[1], KEYS[2], ARGV[1], names)
return cap
"""
)


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


UPDATE_SHA = _sha(UPDATE_LUA)  # EVALSHA: one call per batch


@dataclass(frozen=True, slots=True)
class Keys:
    device: str

    @property
    def prefix(self) -> str:
        return f"autoscale:{{{self.device}}}"

    def rows(self, group: int) -> str:
        """The packed rows of states ``group * GROUP`` .. ``group * GROUP + GROUP - 1``."""
        return f"{self.prefix}:rows:{group}"

    @property
    def vers(self) -> str:
        return f"{self.prefix}:vers"

    @property
    def aidx(self) -> str:
        return f"{self.prefix}:aidx"

    @property
    def cap(self) -> str:
        return f"{self.prefix}:cap"

    @property
    def corr(self) -> str:
        return f"{self.prefix}:corr"

    @property
    def version(self) -> str:
        return f"{self.prefix}:version"

    @property
    def applied(self) -> str:
        return f"{self.prefix}:applied"

    @property
    def actions(self) -> str:
        return f"{self.prefix}:actions"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:inval"

    def holds_table_data(self, key: str) -> bool:
        """Whether ``key`` is part of the table proper (packed rows, row versions, layout)."""
        return ":rows:" in key or key in (self.vers, self.aidx, self.cap)
