-- KEYS[1] the call's state, KEYS[2] the claim of its end (one hash tag).
-- ARGV[1] how long to keep the claim (ms).
-- Returns 1 to the one caller that claims the end first, 0 to any other.
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
