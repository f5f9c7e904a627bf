package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts below keep each broker operation to one round trip and
// atomic. They read binding members the way Kombu writes them:
// routing_key + "\x06\x16" + pattern + "\x06\x16" + queue.

// pushScript delivers a message the way Kombu's direct exchange does, plus
// a TTL on every list it touches, so no list outlives its use. (Replies
// do not come here: see queuePush.)
//
//	KEYS[1] the exchange's binding set
//	ARGV    routing key, message, list TTL in ms, key prefix
var pushScript = goredis.NewScript(`
local sep = "\6\22"
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local i = string.find(m, sep, 1, true)
  if i and string.sub(m, 1, i - 1) == ARGV[1] then
    local j = string.find(m, sep, i + 2, true)
    if j then
      local q = ARGV[4] .. string.sub(m, j + 2)
      redis.call('LPUSH', q, ARGV[2])
      redis.call('PEXPIRE', q, ARGV[3])
      n = n + 1
    end
  end
end
return n
`)

// leaseScript declares a binding and renews its lease. Members whose lease
// ran out (their process died without unbinding) are removed from the
// binding set, so the set only names queues somebody consumes. Kombu's own
// members carry no lease and are left alone. With an owner key it also
// records which process holds the queue and returns the previous holder,
// so two live nodes with one name can be told apart.
//
//	KEYS[1] binding set, KEYS[2] lease zset, KEYS[3] owner key
//	ARGV    member, lease TTL in ms, instance id ("" for no owner key)
var leaseScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('SREM', KEYS[1], m)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('PEXPIRE', KEYS[2], 2 * ttl)
if ARGV[3] ~= '' then
  return redis.call('SET', KEYS[3], ARGV[3], 'PX', ttl, 'GET')
end
return false
`)

// bindingsScript drops bindings whose lease ran out and lists the rest.
//
//	KEYS[1] binding set, KEYS[2] lease zset
var bindingsScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('SREM', KEYS[1], m)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return redis.call('SMEMBERS', KEYS[1])
`)

// unbindScript removes a binding, its lease, its owner record if it is
// ours, and optionally the queue's four priority lists, as Kombu deletes an
// auto-delete queue.
//
//	KEYS[1] binding set, KEYS[2] lease zset, KEYS[3] owner key, KEYS[4..7] lists
//	ARGV    member, instance id, "1" to delete the lists
var unbindScript = goredis.NewScript(`
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] ~= '' and redis.call('GET', KEYS[3]) == ARGV[2] then
  redis.call('DEL', KEYS[3])
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6], KEYS[7])
end
return 1
`)
