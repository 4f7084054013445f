package ttlmap

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
)

// AddrKey is the key of an address: IPv4 and IPv4-mapped IPv6 forms of one
// address are the same key.
func AddrKey(a netip.Addr) [16]byte { return a.As16() }

// HashAddr spreads address keys over shards: the two halves folded, then
// splitmix64's finalizer, so the low bits depend on every byte (an IPv4
// address sits in the last four).
func HashAddr(k [16]byte) uint64 {
	h := binary.LittleEndian.Uint64(k[:8])*0x9e3779b97f4a7c15 ^ binary.LittleEndian.Uint64(k[8:])
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

var seed = maphash.MakeSeed()

// HashString spreads string keys over shards.
func HashString(s string) uint64 { return maphash.String(seed, s) }
