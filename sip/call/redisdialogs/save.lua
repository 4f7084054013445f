-- KEYS[1] the call's state, KEYS[2] the claim of its end (one hash tag).
-- ARGV[1] the state as JSON, ARGV[2] how long to keep it (ms).
-- A call whose end was claimed is not written again (a save that was on
-- its way when the call ended).
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
