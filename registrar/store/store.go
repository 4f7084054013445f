// Package store defines where registrations and subscribers live. The
// registrar talks only to these interfaces; memory and redis implement them
// and pass the same contract suite (storetest).
package store

import (
	"context"
	"errors"
	"time"
)

// Binding is one contact registered for an address-of-record (RFC 3261 §10).
type Binding struct {
	ID        string    `json:"-"`                // stable identity of the contact within its AOR
	Contact   string    `json:"uri"`              // Contact URI as the UA sent it
	Q         int       `json:"q"`                // q-value in thousandths; -1 when the UA gave none
	Expires   time.Time `json:"-"`                // absolute expiry
	CallID    string    `json:"call_id"`          // Call-ID of the REGISTER that last wrote it
	CSeq      uint32    `json:"cseq"`             // its CSeq
	Source    string    `json:"source"`           // IP:port the REGISTER came from (RFC 3581 received/rport)
	NAT       bool      `json:"nat,omitempty"`    // reached at Source over Transport, not at Contact
	Transport string    `json:"transport"`        // transport it came over: udp, tcp
	Params    string    `json:"params,omitempty"` // other Contact header params, echoed in 200 OK
	Path      []string  `json:"path,omitempty"`
	UserAgent string    `json:"ua,omitempty"`
	Instance  string    `json:"instance,omitempty"` // +sip.instance (RFC 5626)
	RegID     int       `json:"reg_id,omitempty"`
	// Push: the device is woken by a push notification (RFC 8599 pn-*
	// Contact URI parameters); empty PushProvider: no push.
	PushProvider string `json:"pn_provider,omitempty"`
	PushPRID     string `json:"pn_prid,omitempty"`
	PushParam    string `json:"pn_param,omitempty"`
	// PushSelfRefresh: the device refreshes its binding itself (+sip.pnsreg,
	// RFC 8599 §4.1.4); otherwise sori pushes it to before it expires.
	PushSelfRefresh bool      `json:"pnsreg,omitempty"`
	Updated         time.Time `json:"updated"`
	// Node is the sori node holding the binding's flow, the one it
	// registered on (sip/nodes); Flow is that node's token for the flow.
	// Both empty on a single node.
	Node string `json:"node,omitempty"`
	Flow string `json:"flow,omitempty"`
}

// Update is the change one REGISTER makes to one AOR; it is applied atomically.
type Update struct {
	AOR       string
	CallID    string
	CSeq      uint32
	Now       time.Time
	RemoveAll bool      // Contact: * with Expires: 0
	Contacts  []Binding // Expires <= Now removes the binding with that ID
	// MaxContacts limits the bindings an AOR may hold after the update (0: no limit).
	MaxContacts int
}

// Errors an Update can end with; nothing is changed when one is returned.
var (
	// ErrOutOfOrder: a binding was last written by the same Call-ID with a
	// higher CSeq (RFC 3261 §10.3 step 7). An equal CSeq is a retransmission
	// and is applied again.
	ErrOutOfOrder = errors.New("store: CSeq not higher than the stored binding's")
	// ErrTooManyContacts: the update would exceed MaxContacts.
	ErrTooManyContacts = errors.New("store: too many contacts for the address-of-record")
	// ErrNotFound: no such subscriber.
	ErrNotFound = errors.New("store: not found")
	// ErrReadOnly: the store cannot manage subscribers (the memory store in another process).
	ErrReadOnly = errors.New("store: subscribers are read-only in this store")
)

// Bindings keeps registrations. Expired bindings are never returned.
type Bindings interface {
	// Update applies u and returns every live binding of the AOR afterwards.
	Update(ctx context.Context, u Update) ([]Binding, error)
	// Lookup returns the live bindings of an AOR.
	Lookup(ctx context.Context, aor string, now time.Time) ([]Binding, error)
	// Count returns the number of live bindings (for metrics; may be approximate).
	Count(ctx context.Context, now time.Time) (int, error)
}

// Subscriber is a user allowed to authenticate. Only digest HA1 hashes are
// kept, never the password.
type Subscriber struct {
	Name      string   `json:"name"`
	Realm     string   `json:"realm"`
	HA1MD5    string   `json:"ha1_md5"`
	HA1SHA256 string   `json:"ha1_sha256"`
	Numbers   []string `json:"numbers,omitempty"` // E.164 numbers the user owns
	// Tags label the user for the quality map (plan=lte-62, device=ios).
	Tags map[string]string `json:"tags,omitempty"`
}

// Subscribers keeps users.
type Subscribers interface {
	Subscriber(ctx context.Context, name string) (Subscriber, error) // ErrNotFound when absent
	PutSubscriber(ctx context.Context, s Subscriber) error
	DeleteSubscriber(ctx context.Context, name string) error // ErrNotFound when absent
	ListSubscribers(ctx context.Context) ([]Subscriber, error)
	// SubscriberByNumber finds who owns an E.164 number; ErrNotFound when nobody.
	SubscriberByNumber(ctx context.Context, number string) (Subscriber, error)
}

// Store is a complete backend.
type Store interface {
	Bindings
	Subscribers
	Ping(ctx context.Context) error
	Close() error
}
