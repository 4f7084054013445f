package registrar

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestBehindNAT(t *testing.T) {
	tests := []struct {
		name      string
		transport string
		source    string
		via       string // host:port of the top Via
		contact   string
		want      bool
	}{
		{"phone with its own public address", "UDP", "198.51.100.7:5060", "198.51.100.7:5060", "sip:alice@198.51.100.7:5060", false},
		{"private contact behind NAT", "UDP", "203.0.113.5:40000", "192.168.1.20:5060", "sip:alice@192.168.1.20:5060", true},
		{"Via rewritten by a NAT-aware phone, port differs", "UDP", "203.0.113.5:40000", "203.0.113.5:5060", "sip:alice@203.0.113.5:5060", true},
		{"carrier-grade NAT contact", "UDP", "203.0.113.5:5060", "203.0.113.5:5060", "sip:alice@100.70.1.2:5060", true},
		{"link-local contact", "UDP", "203.0.113.5:5060", "203.0.113.5:5060", "sip:alice@169.254.10.1:5060", true},
		{"IPv6 phone", "UDP", "[2001:db8::7]:5060", "[2001:db8::7]:5060", "sip:alice@[2001:db8::7]:5060", false},
		{"IPv6 ULA contact", "UDP", "[2001:db8::7]:5060", "[2001:db8::7]:5060", "sip:alice@[fd00::7]:5060", true},
		{"third party registers another public address", "UDP", "127.0.0.1:5173", "127.0.0.1:5173", "sip:user0000@127.0.0.1:5172", false},
		{"no port in Via means 5060", "UDP", "198.51.100.7:5060", "198.51.100.7", "sip:alice@198.51.100.7", false},
		{"TCP contact is not the connection", "TCP", "198.51.100.7:53211", "198.51.100.7:53211", "sip:alice@198.51.100.7:5060;transport=tcp", true},
		{"TCP contact is the connection", "TCP", "198.51.100.7:53211", "198.51.100.7:53211", "sip:alice@198.51.100.7:53211;transport=tcp", false},
		{"TCP contact with a host name", "TCP", "198.51.100.7:53211", "198.51.100.7:53211", "sip:alice@abc123.invalid;transport=tcp", true},
		{"UDP contact with a host name", "UDP", "198.51.100.7:5060", "198.51.100.7:5060", "sip:alice@phone.example.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := "REGISTER sip:sori.test SIP/2.0\r\n" +
				"Via: SIP/2.0/" + tt.transport + " " + tt.via + ";branch=z9hG4bK-1;rport\r\n" +
				"From: <sip:alice@sori.test>;tag=1\r\nTo: <sip:alice@sori.test>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n" +
				"Contact: <" + tt.contact + ">\r\nContent-Length: 0\r\n\r\n"
			msg, err := sip.ParseMessage([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			req := msg.(*sip.Request)
			req.SetSource(tt.source)
			req.SetTransport(tt.transport)
			c := req.Contact()
			if got := behindNAT(req, c.Address); got != tt.want {
				t.Fatalf("behindNAT = %v, want %v", got, tt.want)
			}
		})
	}
}
