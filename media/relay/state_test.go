package relay

import (
	"bytes"
	"testing"
	"time"

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
