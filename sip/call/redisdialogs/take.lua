-- KEYS[1] a node's index, KEYS[2] the lease of its taking (one hash tag).
-- ARGV[1] the taker, ARGV[2] how long its lease lasts (ms), ARGV[3] now
-- (Unix ms).
-- Returns {1, {ID, SCORE, ...}}: the index, its entries past their expiry
-- pruned, to the one taker holding the lease (taken again by the same
-- taker, it is renewed); {0, HOLDER} to any other while HOLDER holds it.
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return {0, holder}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
return {1, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
