package anchorstate

import (
	"context"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

func TestOnOneServer(t *testing.T) { contract(t, redistest.Start(t).URL()) }

// On a three-master Cluster: a call's key and the index are on different
// slots, written and read in pipelines that go-redis splits by slot.
func TestOnCluster(t *testing.T) {
	addrs := redistest.StartCluster(t, 3)
	contract(t, "redis-cluster://"+addrs[0]+","+addrs[1]+","+addrs[2])
}

// contract is what sori-anchor relies on, on one Redis deployment, with
// the client sori-anchor opens for -redis URL.
func contract(t *testing.T, url string) {
	rs, err := redisstore.Open(url, redisstore.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	rdb := rs.Client()
	ctx := context.Background()
	s, err := NewStore(rdb, Options{ID: "anchor-1", TTL: 40 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewStore(rdb, Options{ID: "anchor-2", TTL: 40 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("written calls load as they were, with the TTL", func(t *testing.T) {
		want := []Call{sample("c1"), sample("c{2}")}
		if err := s.Write(ctx, want, nil); err != nil {
			t.Fatal(err)
		}
		if err := other.Write(ctx, []Call{sample("theirs")}, nil); err != nil {
			t.Fatal(err)
		}
		got, bad, err := s.Load(ctx)
		if err != nil || len(bad) != 0 {
			t.Fatalf("load: %v %v", bad, err)
		}
		byID := map[string]Call{}
		for _, c := range got {
			byID[c.ID] = c
		}
		if len(got) != 2 || !reflect.DeepEqual(byID["c1"], want[0]) || !reflect.DeepEqual(byID["c{2}"], want[1]) {
			t.Fatalf("loaded %+v", got)
		}
		ttl, err := rdb.PTTL(ctx, s.Key("c1")).Result()
		if err != nil || ttl <= 39*time.Second || ttl > 40*time.Second {
			t.Fatalf("TTL %v %v", ttl, err)
		}
		if err := s.Write(ctx, nil, []string{"c1", "c{2}"}); err != nil {
			t.Fatal(err)
		}
		if n := rdb.Exists(ctx, s.Key("c1"), s.Key("c{2}")).Val(); n != 0 || rdb.ZCard(ctx, s.IndexKey()).Val() != 0 {
			t.Fatalf("%d keys left, index %d", n, rdb.ZCard(ctx, s.IndexKey()).Val())
		}
		if got, _, _ := other.Load(ctx); len(got) != 1 || got[0].ID != "theirs" {
			t.Fatalf("the other anchor's calls: %+v", got)
		}
	})

	t.Run("expired and unreadable calls are dropped at load", func(t *testing.T) {
		if err := s.Write(ctx, []Call{sample("expired"), sample("gone"), sample("garbled"), sample("fine")}, nil); err != nil {
			t.Fatal(err)
		}
		rdb.ZAdd(ctx, s.IndexKey(), redis.Z{Score: float64(time.Now().Add(-time.Second).UnixMilli()), Member: "expired"})
		rdb.Del(ctx, s.Key("gone")) // its TTL ran out before the index's
		rdb.Set(ctx, s.Key("garbled"), "{", time.Minute)
		got, bad, err := s.Load(ctx)
		if err != nil || len(got) != 1 || got[0].ID != "fine" || len(bad) != 1 || bad["garbled"] == nil {
			t.Fatalf("load: %+v bad %v err %v", got, bad, err)
		}
		members := rdb.ZRange(ctx, s.IndexKey(), 0, -1).Val()
		if !reflect.DeepEqual(members, []string{"fine"}) || rdb.Exists(ctx, s.Key("garbled")).Val() != 0 {
			t.Fatalf("index after load %v", members)
		}
		_ = s.Write(ctx, nil, []string{"fine", "expired"})
	})

	t.Run("the keeper writes the latest save, and a delete after it wins", func(t *testing.T) {
		k := NewKeeper(s, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Second)
		for i := range 5 {
			c := sample("busy")
			c.Legs[0].Medias[0].Stream.RTP.Packets = uint64(i)
			k.Save(c)
		}
		k.Save(sample("short"))
		wait := k.Delete("short")
		kctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { k.Run(kctx); close(done) }()
		if err := wait(ctx); err != nil {
			t.Fatal(err)
		}
		got, _, err := s.Load(ctx)
		if err != nil || len(got) != 1 || got[0].ID != "busy" || got[0].Legs[0].Medias[0].Stream.RTP.Packets != 4 {
			t.Fatalf("after the first write: %+v %v", got, err)
		}
		// A save queued as the keeper stops is still written.
		c := sample("busy")
		c.Legs[0].Medias[0].Stream.RTP.Packets = 99
		k.Save(c)
		cancel()
		<-done
		got, _, _ = s.Load(ctx)
		if len(got) != 1 || got[0].Legs[0].Medias[0].Stream.RTP.Packets != 99 {
			t.Fatalf("after stop: %+v", got)
		}
	})

	t.Run("the certificate for new legs is kept until it expires, per anchor", func(t *testing.T) {
		if _, ok, err := s.LoadCert(ctx); ok || err != nil {
			t.Fatalf("a certificate before any was written: %v %v", ok, err)
		}
		dc, err := dtlssrtp.NewCertificateAt(time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cp, kp, err := dc.PEM()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SaveCert(ctx, Cert{Cert: string(cp), Key: string(kp), NotAfter: dc.NotAfter()}); err != nil {
			t.Fatal(err)
		}
		got, ok, err := s.LoadCert(ctx)
		if err != nil || !ok {
			t.Fatalf("load: %v %v", ok, err)
		}
		back, err := dtlssrtp.ParseCertificatePEM([]byte(got.Cert), []byte(got.Key))
		if err != nil {
			t.Fatal(err)
		}
		if back.Fingerprint() != dc.Fingerprint() || !back.Issued().Equal(dc.Issued()) || !got.NotAfter.Equal(dc.NotAfter()) {
			t.Fatalf("read back %v issued %v until %v, was %v %v %v", back.Fingerprint(), back.Issued(), got.NotAfter, dc.Fingerprint(), dc.Issued(), dc.NotAfter())
		}
		ttl := rdb.PTTL(ctx, s.CertKey()).Val()
		if want := time.Until(dc.NotAfter()); ttl > want+10*time.Millisecond || ttl < want-5*time.Second {
			t.Fatalf("certificate TTL %v, want about %v (until it expires)", ttl, want)
		}
		if _, ok, _ := other.LoadCert(ctx); ok {
			t.Fatal("another anchor reads this one's certificate")
		}
		if err := s.SaveCert(ctx, Cert{Cert: string(cp), Key: string(kp), NotAfter: time.Now().Add(-time.Second)}); err == nil {
			t.Fatal("an expired certificate written")
		}

		// Through the keeper, as a renewal is: the latest one queued lands.
		k := NewKeeper(s, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Second)
		renewed, err := dtlssrtp.NewCertificateAt(time.Now(), 2*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		rp, rk, _ := renewed.PEM()
		k.SaveCert(Cert{Cert: string(rp), Key: string(rk), NotAfter: renewed.NotAfter()})
		kctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { k.Run(kctx); close(done) }()
		wait := k.Delete("nothing") // returns once the write that has the certificate is done
		if err := wait(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		<-done
		got, ok, err = s.LoadCert(ctx)
		if err != nil || !ok || got.Cert != string(rp) {
			t.Fatalf("after the keeper's write: %v %v, the renewed certificate not there", ok, err)
		}
		rdb.Del(ctx, s.CertKey())
	})
}
