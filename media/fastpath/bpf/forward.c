// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The anchor's kernel fast path: a tcx ingress program that forwards a
// plain RTP stream's packets from one leg's phone straight to the other
// leg's phone, rewriting the addresses as sori-anchor's relay would send
// them, and reports each packet (SSRC, sequence number, timestamp,
// arrival) to the relay's statistics through a ring buffer. What it does
// not know is left to the userspace relay, unchanged: packets for ports
// it has no route for, from any source but the latched phone, RTCP, STUN,
// DTLS, anything that is not RTP version 2, IPv6, IP options, fragments,
// and every packet while the ring buffer is full.
//
// Regenerate forward_bpfel.{go,o} with `make bpf` (needs clang).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <stddef.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// A route's key: the anchor's address and port the phone sends to
// (network byte order).
struct key {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

#define ROUTE_LOCAL 1 // the destination is an address of this host: deliver, no redirect

// Where a packet from the latched phone goes, and as what.
struct route {
	__u32 src_addr; // the latched phone: only its packets take the fast path
	__u16 src_port;
	__u16 flags;
	__u32 out_addr; // the anchor's address and port of the other leg
	__u16 out_port;
	__u16 pad;
	__u32 dst_addr; // the other leg's phone
	__u16 dst_port;
	__u16 pad2;
	__u32 id; // the relay's stream, in each record
	__u32 ifindex; // a non-local destination's egress interface
	__u32 nh_addr; // and its next hop: the destination itself or the gateway to it
};

// One forwarded packet, for the relay's RFC 3550 statistics and counters.
struct record {
	__u64 arrival; // CLOCK_MONOTONIC nanoseconds
	__u32 id;
	__u32 ssrc;
	__u32 ts;
	__u16 seq;
	__u16 len; // UDP payload bytes
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct key);
	__type(value, struct route);
	__uint(max_entries, 65536);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23); // 8 MiB: 349 525 records, over 2 s at 160 000 packets/s
} records SEC(".maps");

// Per CPU: [0] packets forwarded, [1] packets left to userspace because
// the ring buffer was full.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} counts SEC(".maps");

#define TCX_NEXT -1 // not ours: the next program on the interface (another anchor) decides
#define TCX_PASS 0

#define IP_OFF ETH_HLEN
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define IP_ADDRS_OFF (IP_OFF + offsetof(struct iphdr, saddr))
#define UDP_OFF (IP_OFF + sizeof(struct iphdr))
#define UDP_CSUM_OFF (UDP_OFF + offsetof(struct udphdr, check))

static __always_inline void count(__u32 i)
{
	__u64 *c = bpf_map_lookup_elem(&counts, &i);
	if (c)
		(*c)++;
}

SEC("tc")
int sori_rtp_fwd(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TCX_NEXT;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return TCX_NEXT;
	if (ip->frag_off & bpf_htons(0x3fff))
		return TCX_NEXT; // a fragment
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return TCX_NEXT;
	struct key k = {.addr = ip->daddr, .port = udp->dest};
	struct route *r = bpf_map_lookup_elem(&routes, &k);
	if (!r)
		return TCX_NEXT;
	if (r->src_addr != ip->saddr || r->src_port != udp->source)
		return TCX_NEXT; // another source: the relay latches, follows a handover or drops
	__u8 *rtp = (void *)(udp + 1);
	if ((void *)(rtp + 12) > end)
		return TCX_NEXT;
	__u8 pt = rtp[1] & 0x7f;
	if ((rtp[0] >> 6) != 2 || (pt >= 64 && pt <= 95))
		return TCX_NEXT; // not RTP: RTCP (RFC 5761), STUN, DTLS
	__u16 ulen = bpf_ntohs(udp->len);
	if (ulen < sizeof(struct udphdr) + 12 || (void *)udp + ulen > end)
		return TCX_NEXT;

	__u32 old_s = ip->saddr, old_d = ip->daddr;
	__u16 old_sp = udp->source, old_dp = udp->dest;
	__u32 new_s = r->out_addr, new_d = r->dst_addr;
	__u16 new_sp = r->out_port, new_dp = r->dst_port;
	// The anchor looked the route up when it set it (bpf_fib_lookup
	// would need forwarding enabled on the interface; the anchor sends
	// as a host, not a router).
	__u32 ifindex = r->ifindex;
	struct bpf_redir_neigh nh = {.nh_family = 2 /* AF_INET */, .ipv4_nh = r->nh_addr};
	int local = r->flags & ROUTE_LOCAL;
	if (!local && ifindex == 0)
		return TCX_NEXT;

	struct record *rec = bpf_ringbuf_reserve(&records, sizeof(*rec), 0);
	if (!rec) {
		count(1);
		return TCX_NEXT; // the relay counts it, as it would without this program
	}
	rec->arrival = bpf_ktime_get_ns();
	rec->id = r->id;
	rec->seq = bpf_ntohs(*(__u16 *)(rtp + 2));
	rec->ts = bpf_ntohl(*(__u32 *)(rtp + 4));
	rec->ssrc = bpf_ntohl(*(__u32 *)(rtp + 8));
	rec->len = ulen - sizeof(struct udphdr);
	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP); // the relay polls: no wake-up per packet

	// From here on the packet pointers are invalid (the helpers may move
	// the data).
	__u32 addrs[2] = {new_s, new_d};
	__u16 ports[2] = {new_sp, new_dp};
	bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_s, new_s, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4);
	bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_d, new_d, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4);
	bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_sp, new_sp, BPF_F_MARK_MANGLED_0 | 2);
	bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_dp, new_dp, BPF_F_MARK_MANGLED_0 | 2);
	bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_s, new_s, 4);
	bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_d, new_d, 4);
	bpf_skb_store_bytes(skb, IP_ADDRS_OFF, addrs, sizeof(addrs), 0);
	bpf_skb_store_bytes(skb, UDP_OFF, ports, sizeof(ports), 0);
	count(0);
	if (local)
		return TCX_PASS; // up the stack to the phone's socket on this host
	return bpf_redirect_neigh(ifindex, &nh, sizeof(nh), 0); // resolves the next hop's MAC as the stack would
}

char __license[] SEC("license") = "Dual BSD/GPL";
