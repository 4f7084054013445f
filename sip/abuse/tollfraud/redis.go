package tollfraud

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCounter counts in Redis (INCR and EXPIRE of HourKey), shared by
// every node.
type RedisCounter struct{ rdb redis.UniversalClient }

// NewRedisCounter returns a counter in rdb.
func NewRedisCounter(rdb redis.UniversalClient) *RedisCounter { return &RedisCounter{rdb: rdb} }

// Incr implements HourlyCounter. The key lives two hours: long enough for
// its hour, then Redis forgets it.
func (c *RedisCounter) Incr(ctx context.Context, user string, hour time.Time) (int64, error) {
	k := HourKey(user, hour)
	var incr *redis.IntCmd
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		incr = p.Incr(ctx, k)
		p.Expire(ctx, k, 2*time.Hour)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("tollfraud: count %s: %w", k, err)
	}
	return incr.Val(), nil
}
