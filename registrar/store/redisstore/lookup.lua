-- Returns the live bindings of one AOR in one round trip.
-- KEYS[1]: the AOR's index; ARGV[1]: now in ms.
-- Returns {id1, json1, id2, json2, ...}.
local idx = KEYS[1]
local ids = redis.call('ZRANGEBYSCORE', idx, '(' .. ARGV[1], '+inf')
local out = {}
for _, id in ipairs(ids) do
  local b = redis.call('HGET', idx .. ':' .. id, 'b')
  if b then
    out[#out + 1] = id
    out[#out + 1] = b
  end
end
return out
