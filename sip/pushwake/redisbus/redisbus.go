// Package redisbus carries push devices' registrations between sori nodes
// over Redis pub/sub (pushwake.Bus): a request held on one node for a
// sleeping app learns that the app registered on another.
package redisbus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store"
)

// Channel is the Redis channel registrations are published on.
const Channel = "sori:push:registered"

// Bus publishes and follows registrations on one Redis deployment.
type Bus struct {
	rdb redis.UniversalClient
}

// New returns a Bus on rdb.
func New(rdb redis.UniversalClient) *Bus { return &Bus{rdb: rdb} }

// wire is a binding with the fields its JSON form leaves out.
type wire struct {
	store.Binding
	BindingID string `json:"id"`
	ExpiresMS int64  `json:"expires_ms"`
}

type message struct {
	AOR      string `json:"aor"`
	Bindings []wire `json:"bindings"`
}

// Publish implements pushwake.Bus.
func (b *Bus) Publish(ctx context.Context, aor string, bindings []store.Binding) error {
	m := message{AOR: aor, Bindings: make([]wire, len(bindings))}
	for i, x := range bindings {
		m.Bindings[i] = wire{Binding: x, BindingID: x.ID, ExpiresMS: x.Expires.UnixMilli()}
	}
	blob, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := b.rdb.Publish(ctx, Channel, blob).Err(); err != nil {
		return fmt.Errorf("publish %s: %w", Channel, err)
	}
	return nil
}

// Subscribe implements pushwake.Bus; it returns when ctx ends or the
// subscription fails.
func (b *Bus) Subscribe(ctx context.Context, deliver func(aor string, bindings []store.Binding)) error {
	sub := b.rdb.Subscribe(ctx, Channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return fmt.Errorf("subscribe %s: %w", Channel, err)
	}
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-ch:
			if !ok {
				return fmt.Errorf("subscription to %s closed", Channel)
			}
			var m message
			if err := json.Unmarshal([]byte(msg.Payload), &m); err != nil {
				continue // not ours
			}
			bs := make([]store.Binding, len(m.Bindings))
			for i, w := range m.Bindings {
				bs[i] = w.Binding
				bs[i].ID, bs[i].Expires = w.BindingID, time.UnixMilli(w.ExpiresMS)
			}
			deliver(m.AOR, bs)
		}
	}
}
