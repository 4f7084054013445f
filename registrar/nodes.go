package registrar

// Holder names the node that holds a binding's flow (sip/nodes): the one
// the REGISTER arrived at, with its token for the connection or NAT
// mapping the REGISTER came over.
type Holder interface {
	Holder(transport, source string) (node, token string)
}

// WithHolder records h's node and flow token in every binding accepted.
func WithHolder(h Holder) Option {
	return func(r *Registrar) { r.holder = h }
}

// WithPathFrom accepts a Path (RFC 3327) in REGISTERs from the sources
// trusted reports ("ip:port"): the edge proxies in front of sori. Without
// it, or from any other source, a REGISTER with Path gets 403. Storing a
// Path from anyone would let a phone, or whoever registers in its name,
// make sori send that user's calls through any proxy it names; dropping
// the Path and storing the binding anyway would leave a proxy believing
// it is on the path when it is not, so the sender is told instead (RFC
// 3327 §5.3 leaves the policy to the registrar; Kamailio configurations
// check the source before save()).
func WithPathFrom(trusted func(src string) bool) Option {
	return func(r *Registrar) { r.pathFrom = trusted }
}
