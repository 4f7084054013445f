package registrar

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/registrar/store/memory"
	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/auth"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/digest"
	"github.com/sori-voice/sori/sip/local"
	"github.com/sori-voice/sori/sip/reply"
)

const benchUsers = 10000

func md5hex(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }

type discard struct{ code int }

func (d *discard) Respond(r *sip.Response) error {
	d.code = r.StatusCode
	_ = reply.Bytes(r) // serialisation is part of the path, as sip/server does it
	return nil
}

// benchRegister measures the authenticated REGISTER path from wire bytes to the
// serialised 200 OK: parse, digest verification, binding update, response.
// Requests are prepared outside the timer in batches (each has its own
// nonce-count, so none is a replay).
func benchRegister(b *testing.B, bindings store.Bindings) {
	dig, err := digest.New("sori.test", []string{"MD5", "SHA-256"}, []byte("bench-secret-0123456789"), 5*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	users := map[string]store.Subscriber{}
	for i := range benchUsers {
		u := fmt.Sprintf("user%04d", i)
		users[u] = auth.NewSubscriber(u, "sori.test", "pw"+u)
	}
	r := New(local.New("sori.test", "127.0.0.1:5060"), auth.New(dig, auth.Directory{Static: users}, nil), bindings,
		Policy{MinExpires: 60, MaxExpires: 3600, DefaultExpires: 3600},
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	h := chain.Build(chain.HandlerFunc(func(context.Context, chain.ResponseWriter, *chain.Request) chain.Result { return chain.Done }), r)

	ch := dig.Challenges(false)[0]
	nonce := ch[strings.Index(ch, `nonce="`)+7:]
	nonce = nonce[:strings.IndexByte(nonce, '"')]
	ha2 := md5hex("REGISTER:sip:sori.test")
	const batch = 4096
	msgs := make([][]byte, batch)
	nc, cseq := 0, 0
	prepare := func() {
		for i := range msgs {
			nc++
			u := fmt.Sprintf("user%04d", nc%benchUsers)
			if nc%benchUsers == 0 {
				cseq++
			}
			ncs := fmt.Sprintf("%08x", nc)
			resp := md5hex(users[u].HA1MD5 + ":" + nonce + ":" + ncs + ":c0ffee:auth:" + ha2)
			msgs[i] = []byte(fmt.Sprintf("REGISTER sip:sori.test SIP/2.0\r\n"+
				"Via: SIP/2.0/UDP 127.0.0.1:5083;branch=z9hG4bK-%d;rport\r\nMax-Forwards: 70\r\n"+
				"From: <sip:%s@sori.test>;tag=%d\r\nTo: <sip:%s@sori.test>\r\nCall-ID: %s-bench\r\nCSeq: %d REGISTER\r\n"+
				"Contact: <sip:%s@127.0.0.1:5082>\r\n"+
				"Authorization: Digest username=\"%s\",realm=\"sori.test\",cnonce=\"c0ffee\",nc=%s,qop=auth,uri=\"sip:sori.test\",nonce=\"%s\",response=\"%s\",algorithm=MD5\r\n"+
				"Expires: 3600\r\nUser-Agent: bench\r\nContent-Length: 0\r\n\r\n",
				nc, u, nc, u, u, cseq+2, u, u, ncs, nonce, resp))
		}
	}
	w := &discard{}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			prepare()
			b.StartTimer()
		}
		msg, err := sip.ParseMessage(msgs[i%batch])
		if err != nil {
			b.Fatal(err)
		}
		req := msg.(*sip.Request)
		req.SetSource("127.0.0.1:5083")
		req.SetTransport("UDP")
		_ = chain.Answer(w, req, h.ServeSIP(context.Background(), w, &chain.Request{Request: req}), 5)
		if w.code != 200 {
			b.Fatalf("request %d: %d", i, w.code)
		}
	}
}

func BenchmarkRegisterMemory(b *testing.B) {
	s := memory.New(time.Minute)
	defer s.Close()
	benchRegister(b, s)
}

func BenchmarkRegisterRedis(b *testing.B) {
	srv := redistest.Start(b)
	s, err := redisstore.Open(srv.URL(), redisstore.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchRegister(b, s)
}
