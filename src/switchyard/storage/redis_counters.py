"""Rate-limit counters in Redis, shared exactly by every gateway process.

Every admission is ONE script run (EVALSHA): all windows, concurrency slots and budgets of all
the call's checks are judged and taken together, all or nothing, by Redis's single-threaded
script execution; no other command runs in between, so no two processes can both take the last
unit. Time is Redis's own (`TIME` inside the script), never a gateway's clock: processes with
skewed clocks still share one timeline.

Keys (`<prefix>` from the config; put it in braces for Redis Cluster, so every key of one script
lands in one slot):
- window: `<prefix>:w<ms>:<rule>:<subject>` a sorted set of `<call>|<cost>` scored by admission
  time, and `<prefix>:w<ms>.aux:<rule>:<subject>` the sum of their costs;
- concurrency: `<prefix>:concurrency:<rule>:<subject>` a sorted set of call ids scored by when
  their lease runs out;
- budgets: `<prefix>:calls:…` and `<prefix>:result_bytes:…` hashes (`d` the UTC day, `u` used that
  day, `r` bytes reserved by calls in flight), and for result bytes a `.aux` sorted set of the
  reservations' leases.

A lease (a concurrency slot, a result-bytes reservation) runs out `lease_ms` after it was last
renewed; this process renews the leases of its calls in flight every third of that, so a
process that dies frees its slots within `lease_ms`, and a live one never loses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from switchyard.storage.limit_counters import (
    BUSY_RETRY_MS,
    CONCURRENCY,
    RESULT_BYTES,
    WINDOW,
    Check,
    Limit,
    Refusal,
    Settlement,
    Standing,
    StoreUnavailable,
    Ticket,
    Verdict,
    new_ticket_id,
)

log = logging.getLogger("switchyard.limits")

_KIND_CODES: Final = {WINDOW: 1, CONCURRENCY: 2, "calls": 3, RESULT_BYTES: 4}
RENEW_BATCH: Final = 512

# Shared by the three scripts: Redis's clock, and integers written without exponents.
_PRELUDE: Final = """
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local day = math.floor(sec / 86400)
local midnight = (day + 1) * 86400000 - now
local function int(x) return string.format('%d', x) end
local function cost_of(member) return tonumber(string.match(member, '|(%d+)$')) end
"""

ADMIT: Final = (
    _PRELUDE
    + """
local tid = ARGV[1]
local lease = tonumber(ARGV[2])
local busy = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local checks = {}
local a, k = 5, 1
for c = 1, n do
  local check = {shadow = ARGV[a] == '1', cost = tonumber(ARGV[a + 1]), limits = {}}
  local nl = tonumber(ARGV[a + 2])
  a = a + 3
  for l = 1, nl do
    check.limits[l] = {kind = tonumber(ARGV[a]), max = tonumber(ARGV[a + 1]),
      period = tonumber(ARGV[a + 2]), reserve = tonumber(ARGV[a + 3]),
      key = KEYS[k], aux = KEYS[k + 1]}
    a = a + 4
    k = k + 2
  end
  checks[c] = check
end

-- What counts against a limit now; entries and leases that ran out are dropped on the way.
local function used(lim)
  if lim.kind == 1 then
    local cutoff = now - lim.period
    local old = redis.call('ZRANGEBYSCORE', lim.key, '-inf', int(cutoff))
    if #old > 0 then
      local freed = 0
      for _, m in ipairs(old) do freed = freed + cost_of(m) end
      redis.call('ZREMRANGEBYSCORE', lim.key, '-inf', int(cutoff))
      redis.call('DECRBY', lim.aux, int(freed))
    end
    return tonumber(redis.call('GET', lim.aux) or '0')
  elseif lim.kind == 2 then
    redis.call('ZREMRANGEBYSCORE', lim.key, '-inf', int(now))
    return redis.call('ZCARD', lim.key)
  end
  local h = redis.call('HMGET', lim.key, 'd', 'u', 'r')
  lim.fresh = tonumber(h[1]) ~= day
  local u = 0
  if not lim.fresh then u = tonumber(h[2] or '0') end
  lim.today = u
  if lim.kind == 3 then return u end
  local r = tonumber(h[3] or '0')
  local expired = redis.call('ZRANGEBYSCORE', lim.aux, '-inf', int(now))
  if #expired > 0 then
    for _, m in ipairs(expired) do r = r - cost_of(m) end
    redis.call('ZREMRANGEBYSCORE', lim.aux, '-inf', int(now))
    redis.call('HSET', lim.key, 'r', int(r))
  end
  return u + r
end

local function demand(lim, cost)
  if lim.kind == 2 then return 1 end
  if lim.kind == 4 then return lim.reserve end
  return cost
end

local function retry(lim, u, cost)
  if lim.kind == 1 then
    local need = u + cost - lim.max
    local entries = redis.call('ZRANGE', lim.key, 0, need - 1, 'WITHSCORES')
    local freed = 0
    for i = 1, #entries, 2 do
      freed = freed + cost_of(entries[i])
      if freed >= need then return math.max(1, tonumber(entries[i + 1]) + lim.period - now) end
    end
    return lim.period
  elseif lim.kind == 2 then
    return busy
  elseif lim.kind == 4 and lim.today + lim.reserve <= lim.max then
    return busy
  end
  return midnight
end

local function judge(c, check, out)
  local ok = true
  for l, lim in ipairs(check.limits) do
    local u = used(lim)
    lim.used = u
    if u + demand(lim, check.cost) > lim.max then
      ok = false
      out[#out + 1] = c - 1
      out[#out + 1] = l - 1
      out[#out + 1] = retry(lim, u, check.cost)
    end
  end
  return ok
end

local function take(check)
  for _, lim in ipairs(check.limits) do
    if lim.kind == 1 then
      redis.call('ZADD', lim.key, int(now), tid .. '|' .. int(check.cost))
      redis.call('INCRBY', lim.aux, int(check.cost))
      redis.call('PEXPIRE', lim.key, int(lim.period + 1000))
      redis.call('PEXPIRE', lim.aux, int(lim.period + 1000))
    elseif lim.kind == 2 then
      redis.call('ZADD', lim.key, int(now + lease), tid)
      redis.call('PEXPIRE', lim.key, int(lease * 2))
    else
      if lim.fresh then redis.call('HSET', lim.key, 'd', int(day), 'u', '0') end
      if lim.kind == 3 then
        redis.call('HINCRBY', lim.key, 'u', int(check.cost))
      else
        redis.call('HINCRBY', lim.key, 'r', int(lim.reserve))
        redis.call('ZADD', lim.aux, int(now + lease), tid .. '|' .. int(lim.reserve))
        redis.call('PEXPIRE', lim.aux, int(lease * 2))
      end
      redis.call('EXPIRE', lim.key, 172800)
    end
    lim.used = lim.used + demand(lim, check.cost)
  end
end

local refusals, shadows, taken = {}, {}, {}
for c = 1, n do
  if not checks[c].shadow then judge(c, checks[c], refusals) end
end
local admitted = #refusals == 0
if admitted then
  for c = 1, n do
    if not checks[c].shadow then
      take(checks[c])
      taken[#taken + 1] = c - 1
    end
  end
  for c = 1, n do
    if checks[c].shadow and judge(c, checks[c], shadows) then
      take(checks[c])
      taken[#taken + 1] = c - 1
    end
  end
end

local out = {admitted and 1 or 0, #refusals / 3}
for _, v in ipairs(refusals) do out[#out + 1] = v end
out[#out + 1] = #shadows / 3
for _, v in ipairs(shadows) do out[#out + 1] = v end
out[#out + 1] = #taken
for _, v in ipairs(taken) do out[#out + 1] = v end
for c = 1, n do
  for _, lim in ipairs(checks[c].limits) do
    local u = lim.used
    if u == nil then u = used(lim) end
    out[#out + 1] = math.max(0, lim.max - u)
    if lim.kind == 1 then
      local first = redis.call('ZRANGE', lim.key, 0, 0, 'WITHSCORES')
      if #first > 0 then out[#out + 1] = tonumber(first[2]) + lim.period - now
      else out[#out + 1] = 0 end
    elseif lim.kind == 2 then
      out[#out + 1] = 0
    else
      out[#out + 1] = midnight
    end
  end
end
return out
"""
)

SETTLE: Final = (
    _PRELUDE
    + """
local tid = ARGV[1]
local bytes = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local items = {}
local a = 4
for i = 1, n do
  items[i] = {check = tonumber(ARGV[a]), limit = tonumber(ARGV[a + 1]),
    kind = tonumber(ARGV[a + 2]), shadow = ARGV[a + 3] == '1', max = tonumber(ARGV[a + 4]),
    reserve = tonumber(ARGV[a + 5]), key = KEYS[2 * i - 1], aux = KEYS[2 * i]}
  a = a + 6
end
-- Give back what the call held; a lease that already ran out was given back by whoever saw it.
for _, it in ipairs(items) do
  if it.kind == 2 then
    redis.call('ZREM', it.key, tid)
  elseif redis.call('ZREM', it.aux, tid .. '|' .. int(it.reserve)) == 1 then
    redis.call('HINCRBY', it.key, 'r', int(-it.reserve))
  end
end
local refusals, shadows, charge = {}, {}, {}
for _, it in ipairs(items) do
  if it.kind == 4 then
    local h = redis.call('HMGET', it.key, 'd', 'u', 'r')
    it.fresh = tonumber(h[1]) ~= day
    local u = 0
    if not it.fresh then u = tonumber(h[2] or '0') end
    if u + tonumber(h[3] or '0') + bytes > it.max then
      local out = refusals
      if it.shadow then out = shadows end
      out[#out + 1] = it.check
      out[#out + 1] = it.limit
      out[#out + 1] = midnight
    else
      charge[#charge + 1] = it
    end
  end
end
-- Enforced budgets are charged all together or not at all: a withheld answer is nobody's.
local withheld = #refusals > 0
if not withheld then
  for _, it in ipairs(charge) do
    if it.fresh then redis.call('HSET', it.key, 'd', int(day), 'u', '0') end
    redis.call('HINCRBY', it.key, 'u', int(bytes))
    redis.call('EXPIRE', it.key, 172800)
  end
end
local out = {withheld and 1 or 0, #refusals / 3}
for _, v in ipairs(refusals) do out[#out + 1] = v end
out[#out + 1] = #shadows / 3
for _, v in ipairs(shadows) do out[#out + 1] = v end
return out
"""
)

RENEW: Final = (
    _PRELUDE
    + """
local lease = tonumber(ARGV[1])
for i = 1, #KEYS do
  if redis.call('ZSCORE', KEYS[i], ARGV[i + 1]) then
    redis.call('ZADD', KEYS[i], 'XX', int(now + lease), ARGV[i + 1])
    redis.call('PEXPIRE', KEYS[i], int(lease * 2))
  end
end
return #KEYS
"""
)


def _keys(prefix: str, check: Check, limit: Limit) -> tuple[str, str]:
    # A rule name never holds `:`, and the slug sits before it: no two keys can collide,
    # whatever a subject (a principal) contains.
    return (f"{prefix}:{limit.slug}:{check.key}", f"{prefix}:{limit.slug}.aux:{check.key}")


def _refusals(values: list[Any], at: int) -> tuple[list[Refusal], int]:
    count = int(values[at])
    at += 1
    out = [
        Refusal(int(values[at + 3 * i]), int(values[at + 3 * i + 1]), int(values[at + 3 * i + 2]))
        for i in range(count)
    ]
    return out, at + 3 * count


class RedisCounters:
    name = "redis"
    shared = True

    def __init__(
        self,
        url: str,
        prefix: str,
        lease_ms: int = 30_000,
        timeout_s: float = 2.0,
        max_connections: int = 64,
    ) -> None:
        self.prefix = prefix
        self.lease_ms = lease_ms
        # A bounded pool: a burst of calls queues for a connection instead of opening
        # thousands; waiting past the timeout is a store failure like any other.
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._admit = self._client.register_script(ADMIT)
        self._settle = self._client.register_script(SETTLE)
        self._renew = self._client.register_script(RENEW)
        self._held: dict[str, list[tuple[str, str]]] = {}
        """Per call in flight: the leases (key, member) it holds, renewed until settled."""
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, checks: Sequence[Check]) -> Verdict:
        ticket = Ticket(new_ticket_id(), tuple(checks))
        keys: list[str] = []
        args: list[str | int] = [ticket.id, self.lease_ms, BUSY_RETRY_MS, len(checks)]
        for check in checks:
            args += ["1" if check.shadow else "0", check.cost, len(check.limits)]
            for limit in check.limits:
                keys.extend(_keys(self.prefix, check, limit))
                args += [_KIND_CODES[limit.kind], limit.max, limit.period_ms, limit.reserve]
        try:
            values: list[Any] = await self._admit(keys=keys, args=args)
        except RedisError as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        verdict = Verdict(admitted=values[0] == 1)
        verdict.refusals, at = _refusals(values, 1)
        verdict.shadow_refusals, at = _refusals(values, at)
        taken_count = int(values[at])
        ticket.taken = tuple(int(v) for v in values[at + 1 : at + 1 + taken_count])
        at += 1 + taken_count
        for check in checks:
            row = []
            for _ in check.limits:
                row.append(Standing(int(values[at]), int(values[at + 1])))
                at += 2
            verdict.standings.append(row)
        if verdict.admitted:
            verdict.ticket = ticket
            leases = self._leases(ticket)
            if leases:
                self._held[ticket.id] = leases
                if self._renewer is None or self._renewer.done():
                    self._renewer = asyncio.create_task(self._renew_leases(), name="limit-leases")
        return verdict

    def _leases(self, ticket: Ticket) -> list[tuple[str, str]]:
        out = []
        for i in ticket.taken:
            check = ticket.checks[i]
            for limit in check.limits:
                if limit.kind == CONCURRENCY:
                    out.append((_keys(self.prefix, check, limit)[0], ticket.id))
                elif limit.kind == RESULT_BYTES:
                    member = f"{ticket.id}|{limit.reserve}"
                    out.append((_keys(self.prefix, check, limit)[1], member))
        return out

    async def settle(self, ticket: Ticket, result_bytes: int) -> Settlement:
        if ticket.settled:
            return Settlement(withheld=False)
        ticket.settled = True
        self._held.pop(ticket.id, None)
        keys: list[str] = []
        items: list[str | int] = []
        count = 0
        for i in ticket.taken:
            check = ticket.checks[i]
            for j, limit in enumerate(check.limits):
                if limit.kind in (CONCURRENCY, RESULT_BYTES):
                    keys.extend(_keys(self.prefix, check, limit))
                    items += [i, j, _KIND_CODES[limit.kind], "1" if check.shadow else "0"]
                    items += [limit.max, limit.reserve]
                    count += 1
        if not count:
            return Settlement(withheld=False)
        try:
            values: list[Any] = await self._settle(
                keys=keys, args=[ticket.id, result_bytes, count, *items]
            )
        except RedisError as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        outcome = Settlement(withheld=values[0] == 1)
        outcome.refusals, at = _refusals(values, 1)
        outcome.shadow_refusals, _ = _refusals(values, at)
        return outcome

    async def _renew_leases(self) -> None:
        while self._held:
            await asyncio.sleep(self.lease_ms / 3000)
            leases = [lease for held in list(self._held.values()) for lease in held]
            for start in range(0, len(leases), RENEW_BATCH):
                batch = leases[start : start + RENEW_BATCH]
                try:
                    await self._renew(
                        keys=[key for key, _ in batch],
                        args=[self.lease_ms, *(member for _, member in batch)],
                    )
                except RedisError as exc:
                    # The next round tries again; a lease lost meanwhile frees its slot early.
                    log.warning("renewing rate-limit leases failed: %s", type(exc).__name__)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self._client.aclose()
        await self._pool.disconnect()
