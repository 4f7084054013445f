package relay

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
)

// A stream restored from its State goes on where it was: counters,
// latched address, and the SRTP rollover counters of both directions
// past a sequence wrap (without them, the next packet fails to
// authenticate).
func TestRestoredStreamKeepsCountersAndSRTPRollover(t *testing.T) {
	ka := &Crypto{In: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80), Out: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80)}
	pa := newSRTPPhone(t, ka)
	pb := newPhone(t)
	c := newSRTPCall(t, 47000, Options{OpusPT: 111}, ka, nil, pa.addr(), pb.addr())
	for _, seq := range []uint16{65534, 65535, 0, 1} { // both directions wrap: ROC 1
		wire, err := pa.send.EncryptRTP(nil, opusPacket(seq), nil)
		if err != nil {
			t.Fatal(err)
		}
		pa.phone.send(c.portA, wire)
		if got, _, ok := pb.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(seq)) {
			t.Fatalf("A→B %d not relayed", seq)
		}
		pb.send(c.portB, opusPacket(seq))
		got, _, ok := pa.phone.recv(time.Second)
		if !ok {
			t.Fatalf("B→A %d not relayed", seq)
		}
		if _, err := pa.recv.DecryptRTP(nil, got, nil); err != nil {
			t.Fatalf("B→A %d: %v", seq, err)
		}
	}
	st := c.a.State()
	if st.InROC[0x1234] != 1 || st.OutROC[0x1234] != 1 || st.Latched != pa.addr() || st.RTP.Packets != 4 {
		t.Fatalf("state %+v", st)
	}
	stB := c.b.State()

	restored := func(lo int, restore bool) *srtpCall {
		n := newSRTPCall(t, lo, Options{OpusPT: 111}, ka, nil, pa.addr(), pb.addr())
		if restore {
			n.a.Restore(st)
			n.b.Restore(stB)
		}
		return n
	}
	n := restored(47200, true)
	wire, err := pa.send.EncryptRTP(nil, opusPacket(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	pa.phone.send(n.portA, wire)
	if got, _, ok := pb.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(2)) {
		t.Fatal("A→B after the restore: not decrypted with the rollover counter kept")
	}
	pb.send(n.portB, opusPacket(2))
	got, _, ok := pa.phone.recv(time.Second)
	if !ok {
		t.Fatal("B→A after the restore: nothing")
	}
	if _, err := pa.recv.DecryptRTP(nil, got, nil); err != nil {
		t.Fatalf("B→A after the restore: encrypted without the rollover counter kept: %v", err)
	}
	if rtp, _ := n.a.Stats(); rtp.Packets != 5 {
		t.Fatalf("A's counter after the restore: %d, want 5", rtp.Packets)
	}
	// The same packet to a stream not restored fails: the test tells.
	fresh := restored(47400, false)
	wire, _ = pa.send.EncryptRTP(nil, opusPacket(3), nil)
	pa.phone.send(fresh.portA, wire)
	if got, _, ok := pb.recv(300 * time.Millisecond); ok {
		t.Fatalf("a stream without the rollover counter relayed %x", got)
	}
}

// The SRTCP index of the reports the anchor re-encrypts for an SRTP phone
// (here from a plain-RTP phone) goes on after a restore: the phone's
// replay list has seen the indexes used before, and refuses them. The
// phone's own report (downstream) is kept too.
func TestRestoredStreamKeepsSRTCPIndexAndDownstream(t *testing.T) {
	ka := &Crypto{In: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80), Out: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80)}
	pa := newSRTPPhone(t, ka)
	// Phone A's view of the anchor's SRTCP, with a replay list as phones keep.
	recvRTCP, err := srtp.CreateContext(ka.Out.Key, ka.Out.Salt, ka.Out.Profile, srtp.SRTCPReplayProtection(64))
	if err != nil {
		t.Fatal(err)
	}
	rtcpA, pb, rtcpB := newPhone(t), newPhone(t), newPhone(t)
	sr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.SenderReport{SSRC: 0x1234, NTPTime: 0x0102030405060708, RTPTime: 4800, PacketCount: 5}})
	// call relays one RTP packet from B (so B's SSRC is known), then B's
	// sender report n times, each of which must reach A and decrypt.
	call := func(lo int, restore *[2]State, n int) *srtpCall {
		c := newSRTPCall(t, lo, Options{OpusPT: 111}, ka, nil, pa.addr(), pb.addr())
		c.a.SetEndpoint(pa.addr(), rtcpA.addr())
		c.b.SetEndpoint(pb.addr(), rtcpB.addr())
		if restore != nil {
			c.a.Restore(restore[0])
			c.b.Restore(restore[1])
		}
		pb.send(c.portB, opusPacket(7))
		if _, _, ok := pa.phone.recv(time.Second); !ok {
			t.Fatal("B→A RTP not relayed")
		}
		for i := range n {
			rtcpB.send(netip.AddrPortFrom(c.portB.Addr(), c.portB.Port()+1), sr)
			got, _, ok := rtcpA.recv(time.Second)
			if !ok {
				t.Fatalf("B's report %d not relayed to A", i)
			}
			if dec, err := recvRTCP.DecryptRTCP(nil, got, nil); err != nil || !bytes.Equal(dec, sr) {
				t.Fatalf("B's report %d (restored %v) refused by A: %v", i, restore != nil, err)
			}
		}
		return c
	}
	c := call(47600, nil, 3)
	// A reports what it receives: the anchor keeps it.
	rr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 0x9999, Reports: []rtcp.ReceptionReport{{SSRC: 0x1234, FractionLost: 64, TotalLost: 9}}}})
	wire, err := pa.sendRTCP.EncryptRTCP(nil, rr, nil)
	if err != nil {
		t.Fatal(err)
	}
	rtcpA.send(c.rtcpA, wire)
	if _, _, ok := rtcpB.recv(time.Second); !ok {
		t.Fatal("A's report not relayed to B")
	}
	st := [2]State{c.a.State(), c.b.State()}
	if st[0].OutSRTCP[0x1234] != 3 || st[0].Downstream == nil || st[0].Downstream.TotalLost != 9 {
		t.Fatalf("A's state: out SRTCP %v, downstream %+v", st[0].OutSRTCP, st[0].Downstream)
	}
	n := call(47800, &st, 2)
	if d := n.a.Downstream(); !d.Known || d.Report.TotalLost != 9 || d.Report.FractionLost != 64 {
		t.Fatalf("downstream after the restore: %+v", d)
	}
	// Without the restore the anchor counts from 1 again, and A refuses it.
	fresh := newSRTPCall(t, 48000, Options{OpusPT: 111}, ka, nil, pa.addr(), pb.addr())
	fresh.a.SetEndpoint(pa.addr(), rtcpA.addr())
	fresh.b.SetEndpoint(pb.addr(), rtcpB.addr())
	pb.send(fresh.portB, opusPacket(8))
	if _, _, ok := pa.phone.recv(time.Second); !ok {
		t.Fatal("B→A RTP not relayed")
	}
	rtcpB.send(netip.AddrPortFrom(fresh.portB.Addr(), fresh.portB.Port()+1), sr)
	got, _, ok := rtcpA.recv(time.Second)
	if !ok {
		t.Fatal("B's report not relayed by the fresh stream")
	}
	if _, err := recvRTCP.DecryptRTCP(nil, got, nil); err == nil {
		t.Fatal("A took an SRTCP index it had seen: the test cannot tell")
	}
}
