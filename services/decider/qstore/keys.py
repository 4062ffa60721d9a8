"""Where a device's Q table lives in Redis (``Keys``) and the Lua scripts that change it.

The layout and the protocol are described in ``services.decider.qstore``. How values are
written into these keys (text hashes today) is ``codec``'s business; the scripts and the codec
change together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Q values are stored with 17 significant digits: a double survives the text round trip
# exactly, so Python and Lua compute bit-identical updates.
UPDATE_LUA = """
-- KEYS: 1 q(S)  2 n(S)  3 q(S')  4 ver  5 version  6 applied
-- ARGV: 1 state  2 action  3 reward  4 lr  5 discount  6 init  7 token  8 seq  9 channel
--       10.. pairs (next action, its initial value)
local seq = tonumber(ARGV[8])
local last = tonumber(redis.call('HGET', KEYS[6], ARGV[7]) or '0')
if last >= seq then
  return {'dup'}
end
if last < seq - 1 then
  -- an earlier update of this token is missing: Redis lost it (restart); the writer replays
  return {'gap', tostring(last)}
end
redis.call('HSET', KEYS[6], ARGV[7], ARGV[8])
local q = redis.call('HGET', KEYS[1], ARGV[2])
if q then q = tonumber(q) else q = tonumber(ARGV[6]) end
local best = 0
if #ARGV >= 10 then
  local names = {}
  for i = 10, #ARGV, 2 do names[#names + 1] = ARGV[i] end
  local got = redis.call('HMGET', KEYS[3], unpack(names))
  for j = 1, #names do
    local v = got[j]
    if v then v = tonumber(v) else v = tonumber(ARGV[9 + 2 * j]) end
    if j == 1 or v > best then best = v end
  end
end
local new = q + tonumber(ARGV[4]) * (tonumber(ARGV[3]) + tonumber(ARGV[5]) * best - q)
local s = string.format('%.17g', new)
redis.call('HSET', KEYS[1], ARGV[2], s)
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
local prev = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
local ver = redis.call('INCR', KEYS[5])
redis.call('HSET', KEYS[4], ARGV[1], ver)
redis.call('PUBLISH', ARGV[9], 'u|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. s .. '|' .. n .. '|' .. ver .. '|' .. prev)
return {s, n, ver, prev}
"""

# Replace mode: delete every row of the namespace (the ver hash lists them all).
CLEAR_LUA = """
-- KEYS: 1 ver   ARGV: 1 key prefix ("autoscale:{dev}")
local states = redis.call('HKEYS', KEYS[1])
for _, s in ipairs(states) do
  redis.call('DEL', ARGV[1] .. ':q:' .. s, ARGV[1] .. ':n:' .. s)
end
redis.call('DEL', KEYS[1])
return #states
"""

# End of a bulk write: one new version for every touched state, then one reload message.
BUMP_LUA = """
-- KEYS: 1 ver  2 version   ARGV: 1 channel, 2.. states
local v = redis.call('INCR', KEYS[2])
for i = 2, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], v)
end
redis.call('PUBLISH', ARGV[1], '*|' .. v)
return v
"""


UPDATE_SHA = hashlib.sha1(UPDATE_LUA.encode()).hexdigest()  # EVALSHA: one round trip per batch


@dataclass(frozen=True, slots=True)
class Keys:
    device: str

    @property
    def prefix(self) -> str:
        return f"autoscale:{{{self.device}}}"

    def q(self, state: int) -> str:
        return f"{self.prefix}:q:{state}"

    def n(self, state: int) -> str:
        return f"{self.prefix}:n:{state}"

    @property
    def ver(self) -> str:
        return f"{self.prefix}:ver"

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
        """Whether ``key`` is part of the table proper (rows, visits, row versions)."""
        return ":q:" in key or ":n:" in key or key == self.ver
