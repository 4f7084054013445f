-- Applies one REGISTER to one address-of-record atomically (RFC 3261 §10.3
-- steps 7-8); the same rules as store.Apply in Go.
-- KEYS[1]: the AOR's index (sorted set: binding id -> expiry in ms). Each
--          binding is a hash at KEYS[1]..':'..id in the same hash slot.
-- ARGV: now_ms, call_id, cseq, remove_all (0/1), max_contacts (0: none), n,
--       then n triples: id, expires_ms (<= now: remove), JSON binding
-- Returns {'ok', id1, json1, id2, json2, ...} or {'err', reason}.
local idx = KEYS[1]
local now = tonumber(ARGV[1])
local cid = ARGV[2]
local cseq = tonumber(ARGV[3])
local maxc = tonumber(ARGV[5])
local n = tonumber(ARGV[6])

-- Binding hashes expire by their own TTL; drop their index entries too.
redis.call('ZREMRANGEBYSCORE', idx, '-inf', now)
local live = redis.call('ZRANGE', idx, 0, -1)
local isLive = {}
for _, id in ipairs(live) do isLive[id] = true end

local function outOfOrder(id)
  local old = redis.call('HMGET', idx .. ':' .. id, 'cid', 'cseq')
  return old[1] == cid and old[2] and tonumber(old[2]) > cseq
end

if ARGV[4] == '1' then
  for _, id in ipairs(live) do
    if outOfOrder(id) then return {'err', 'out_of_order'} end
  end
  for _, id in ipairs(live) do redis.call('DEL', idx .. ':' .. id) end
  redis.call('DEL', idx)
  return {'ok'}
end

-- The bindings there once the request is applied, contact by contact: a
-- contact named twice counts once, the last naming deciding (store.Apply).
local count = #live
local present = {}
for id in pairs(isLive) do present[id] = true end
for i = 0, n - 1 do
  local id = ARGV[7 + i * 3]
  local exp = tonumber(ARGV[8 + i * 3])
  if isLive[id] and outOfOrder(id) then return {'err', 'out_of_order'} end
  local stays = exp > now
  if present[id] and not stays then
    count = count - 1
  elseif stays and not present[id] then
    count = count + 1
  end
  present[id] = stays
end
if maxc > 0 and count > maxc and count > #live then return {'err', 'too_many'} end

for i = 0, n - 1 do
  local id = ARGV[7 + i * 3]
  local exp = tonumber(ARGV[8 + i * 3])
  local key = idx .. ':' .. id
  if exp <= now then
    redis.call('DEL', key)
    redis.call('ZREM', idx, id)
  else
    redis.call('HSET', key, 'cid', cid, 'cseq', ARGV[3], 'b', ARGV[9 + i * 3])
    redis.call('PEXPIREAT', key, exp)
    redis.call('ZADD', idx, exp, id)
  end
end

local out = {'ok'}
local all = redis.call('ZRANGE', idx, 0, -1, 'WITHSCORES')
local maxexp = 0
for i = 1, #all, 2 do
  local b = redis.call('HGET', idx .. ':' .. all[i], 'b')
  if b then
    out[#out + 1] = all[i]
    out[#out + 1] = b
  end
  local e = tonumber(all[i + 1])
  if e > maxexp then maxexp = e end
end
if maxexp > 0 then
  redis.call('PEXPIREAT', idx, maxexp)
else
  redis.call('DEL', idx)
end
return out
