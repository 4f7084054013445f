-- KEYS[1] the lease of taking a node's calls.
-- ARGV[1] the taker.
-- Ends the lease if the taker still holds it (it may have expired, and
-- another taker hold it now).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
