package config

import "time"

// Quality is the loss weather map (README, "Call quality map").
type Quality struct {
	// Retention: hours older than this are dropped (Redis: they expire).
	Retention Duration `yaml:"retention"`
	// MinCalls: cells with fewer call sides are greyed on the operator
	// page and left out of the public one.
	MinCalls int `yaml:"min_calls"`
	// Public serves /quality/public and /api/quality/public: aggregates
	// with at least min_calls call sides, no user or call data.
	Public bool `yaml:"public"`
	// FlushEvery: with the Redis store, each node counts its calls in
	// memory and adds its cells to Redis this often (and when it stops).
	FlushEvery Duration `yaml:"flush_every"`
}

func defaultQuality() Quality {
	return Quality{Retention: Duration(90 * 24 * time.Hour), MinCalls: 30, FlushEvery: Duration(5 * time.Second)}
}

func (v *validator) checkQuality(c *Config) {
	if r := c.Quality.Retention.D(); r < time.Hour || r > 5*366*24*time.Hour {
		v.fail("quality.retention", "%v: give 1h up to 5 years (e.g. 2160h for 90 days)", r)
	}
	if m := c.Quality.MinCalls; m < 1 || m > 100000 {
		v.fail("quality.min_calls", "%d is outside 1..100000", m)
	}
	if f := c.Quality.FlushEvery.D(); f < 100*time.Millisecond || f > 10*time.Minute {
		v.fail("quality.flush_every", "%v: give 100ms up to 10m", f)
	}
}
