-- KEYS[1] the lease of taking a node's calls.
-- ARGV[1] the taker (the node itself, checking its own calls), ARGV[2]
-- how long its lease lasts (ms).
-- Returns ARGV[1] once it holds the lease (held by it already, it is
-- renewed), else the one holding it.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return holder
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
