-- KEYS[1] a call's state.
-- ARGV[1] the state as the taker read it, ARGV[2] the same state saved by
-- the taker.
-- Returns 1 when the state was still ARGV[1] (it is the taker's now, with
-- the TTL it had), 0 when it changed meanwhile (ended, expired, or saved
-- by another node since: that one owns it).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
