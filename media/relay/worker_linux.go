package relay

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A worker is an epoll instance and the goroutine that waits on it. Its
// streams' sockets are registered edge-triggered; it drains each socket
// that becomes readable, and plays out its streams' jitter buffers from
// one scheduler: a heap of the streams' next playout times, so that one
// wake-up (epoll_pwait2's timeout, at the earliest due packet) serves
// every stream due by then or within playCoalesce after, instead of a
// goroutine and a timer per stream.

// playCoalesce is how long before its playout time a packet may be sent:
// a worker wakes at the earliest due packet (its timeout is in
// nanoseconds, never rounded up to a millisecond or a tick) and sends, in
// the same wake-up, every packet due within playCoalesce after it. So the
// packets of streams due close together share a wake-up (at most one per
// playCoalesce for the playout, however many streams) without any being
// sent later than due: the worker adds only its wake-up lateness (the
// kernel's timer slack, 50 µs, and the scheduler's) to the buffer's
// delay, and takes up to playCoalesce off it. It used to wake at the
// earliest due plus 200 µs, which added that much to every packet. A
// packet up to 1 ms early is nothing to the next hop's jitter buffer,
// which waits for packets that come late.
const playCoalesce = time.Millisecond

// playWait is how long a worker may sleep before its next playout (at
// most limit): until the earliest due packet, 0 if that is past.
func (w *worker) playWait(limit int64) int64 {
	if len(w.heap) == 0 {
		return limit
	}
	return min(max(w.heap[0].due-time.Now().UnixNano(), 0), limit)
}

var pool struct {
	once    sync.Once
	n       int // workers to start; 0: GOMAXPROCS
	workers []*worker
	err     error
}

// SetWorkers sets how many workers relay the streams on Linux (0, the
// default: DefaultWorkers). It has effect only before the first stream
// starts.
func SetWorkers(n int) { pool.n = n }

// SetSendRing turns the workers' io_uring sends on (the default) or off
// (a sendmmsg per socket, as on kernels without io_uring). It has effect
// only before the first stream starts.
func SetSendRing(on bool) { ringOn = on }

// CheckSendRing reports why the workers would send without io_uring (a
// kernel without it, or io_uring_disabled, or a seccomp filter), nil when
// they can use it or it is turned off.
func CheckSendRing() error {
	if !ringOn {
		return nil
	}
	r, err := newSendRing(1)
	if err != nil {
		return err
	}
	r.close()
	return nil
}

var ringOn = true

// ringEntries is a worker's ring size: the most sends one submit carries.
const ringEntries = 256

// DefaultWorkers is one worker per CPU. A worker sleeping in epoll_pwait2
// holds its P in a system call, and while no P is idle Go's sysmon takes
// them back every 20 µs and never sleeps longer (measured with 2 workers
// and GOMAXPROCS 2 on 2 cores at 80,000 packets/s: sysmon's wake-ups were
// 13 % of the anchor's CPU). So sori-anchor runs with GOMAXPROCS one more
// than its workers; one worker and GOMAXPROCS 2 cost the same CPU per
// packet but, one thread sharing 2 cores with other busy processes, gave
// 1.6× the p99 latency at 1600 calls (24 ms against 15 ms). Even so sysmon
// kept waking every 20 µs (10 % of the anchor's samples at 800 calls);
// with a P to spare the workers now wait in a raw system call (maxWait).
func DefaultWorkers() int { return runtime.NumCPU() }

func workers() ([]*worker, error) {
	pool.once.Do(func() {
		n := pool.n
		if n <= 0 {
			n = DefaultWorkers()
		}
		raw := runtime.GOMAXPROCS(0) > n
		for i := 0; i < n; i++ {
			w, err := newWorker()
			if err != nil {
				pool.err = err
				return
			}
			w.raw = raw
			pool.workers = append(pool.workers, w)
			ready := make(chan struct{})
			go w.run(ready)
			<-ready // the worker knows whether it receives through a ring
		}
	})
	return pool.workers, pool.err
}

type worker struct {
	epfd    int
	raw     bool // waits in a raw system call (maxWait)
	streams atomic.Int64
	wakes   atomic.Uint64 // times the worker came out of its wait (benchmarks: wakeups)

	// The worker goroutine's own.
	ring   *sendRing // nil: no io_uring, each flush is a sendmmsg
	p      pumpState
	events [256]unix.EpollEvent
	heap   playHeap
	held   heldBufs

	ringWorker // receiving through io_uring (uring_recv_linux.go); rx nil: epoll
}

func newWorker() (*worker, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("relay: epoll: %w", err)
	}
	w := &worker{epfd: fd}
	if ringOn {
		if w.ring, err = newSendRing(ringEntries); err != nil {
			w.ring = nil // sendmmsg per socket, as before (CheckSendRing says why)
		}
	}
	w.p.init(w)
	return w, nil
}

// maxWait bounds a worker's epoll_pwait2. The worker waits in a raw
// system call, without entersyscall, so the Go scheduler sees its P as
// running, not in a system call: otherwise sysmon keeps polling such Ps
// every 20 µs to hand them off, and never backs off (perf record -e
// cpu-clock of sori-anchor at 800 calls, 80,000 packets/s, with Syscall6:
// sysmon's usleep and its context switches were 10 % of the anchor's
// samples). The worker's P is held meanwhile, so only when GOMAXPROCS is
// larger than the number of workers (sori-anchor runs with one P more than
// its workers), which leaves a P for everything else; otherwise (tests, a
// process with other work) the wait is an ordinary blocking system call.
// The bound lets the worker
// come back to Go code at least every maxWait (for a stop-the-world, also
// when async preemption is off); sysmon's preemption signal interrupts the
// wait (EINTR) sooner.
const maxWait = 10 * time.Millisecond

func (w *worker) run(ready chan<- struct{}) {
	if ringOn && recvRingOn && w.startRing() == nil {
		close(ready)
		w.runRing()
		return
	}
	close(ready)
	for {
		ts := unix.NsecToTimespec(w.playWait(int64(maxWait)))
		var n uintptr
		var errno unix.Errno
		if w.raw {
			// A raw system call although it blocks: see maxWait.
			n, _, errno = unix.RawSyscall6(unix.SYS_EPOLL_PWAIT2, uintptr(w.epfd), uintptr(unsafe.Pointer(&w.events[0])), uintptr(len(w.events)),
				uintptr(unsafe.Pointer(&ts)), 0, 0)
		} else {
			// Syscall6 lets the scheduler run other goroutines on this P
			// meanwhile.
			n, _, errno = unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(w.epfd), uintptr(unsafe.Pointer(&w.events[0])), uintptr(len(w.events)),
				uintptr(unsafe.Pointer(&ts)), 0, 0)
		}
		if errno != 0 {
			n = 0 // EINTR
		}
		now := time.Now()
		for i := 0; i < int(n); i++ {
			if k := sockets.get(uint32(w.events[i].Fd)); k != nil && k.gen == uint32(w.events[i].Pad) {
				w.p.drain(k, now)
			}
		}
		if len(w.heap) > 0 {
			w.play(time.Now())
		}
		w.p.submit()
		w.p.used, w.p.encUsed = 0, 0
		w.wakes.Add(1)
	}
}

// wakeups is how many times the workers came out of their waits.
func wakeups() uint64 {
	var n uint64
	for _, w := range pool.workers {
		n += w.wakes.Load()
	}
	return n
}

// add registers a stream's sockets.
func (w *worker) add(ks ...*socket) error {
	if w.rx != nil {
		ops := make([]ringOp, len(ks))
		for i, k := range ks {
			sockets.add(k)
			ops[i] = ringOp{k: k}
		}
		w.post(ops...)
		return nil
	}
	for _, k := range ks {
		sockets.add(k)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(k.idx), Pad: int32(k.gen)}
		k.mu.RLock()
		err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, k.fd, &ev)
		k.mu.RUnlock()
		if err != nil {
			return fmt.Errorf("relay: epoll_ctl: %w", err)
		}
	}
	return nil
}

// remove unregisters and closes a stream's sockets. An event the worker
// already took for one of them finds it gone, or closed.
func (w *worker) remove(ks ...*socket) {
	if w.rx != nil {
		// The worker cancels the sockets' receives (all in one wake-up);
		// a request left in the ring would keep a socket's port bound
		// and its reads going to a stream no longer there.
		ops := make([]ringOp, len(ks))
		for i, k := range ks {
			ops[i] = ringOp{k: k, done: make(chan struct{})}
		}
		w.post(ops...)
		for i, k := range ks {
			<-ops[i].done
			sockets.remove(k.idx)
			k.close()
		}
		return
	}
	for _, k := range ks {
		k.mu.RLock()
		if k.fd >= 0 {
			_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, k.fd, nil)
		}
		k.mu.RUnlock()
		sockets.remove(k.idx)
		k.close()
	}
}

// pick chooses the worker of a stream: its peer's when the peer has one
// (both directions of a call on one worker), else the one with fewest
// streams.
func pick(s *Stream) (*worker, error) {
	ws, err := workers()
	if err != nil {
		return nil, err
	}
	if p := s.peer.Load(); p != nil {
		if w := p.worker.Load(); w != nil {
			return w, nil
		}
	}
	best := ws[0]
	for _, w := range ws[1:] {
		if w.streams.Load() < best.streams.Load() {
			best = w
		}
	}
	return best, nil
}

// streamSys is the Linux part of a Stream.
type streamSys struct {
	life     sync.Mutex // Start against closeSockets
	started  bool
	closed   bool
	startErr error
	gone     atomic.Bool // closed: the scheduler drops the stream
	worker   atomic.Pointer[worker]
}

// Start begins forwarding (idempotent).
func (s *Stream) Start() {
	s.life.Lock()
	defer s.life.Unlock()
	if s.started || s.closed {
		return
	}
	w, err := pick(s)
	if err == nil {
		err = w.add(s.rtpSock, s.rtcpSock)
	}
	if err != nil {
		// Not relayed: counted as errors of nothing; the call still
		// ends normally.
		s.startErr = err
		return
	}
	s.started = true
	w.streams.Add(1)
	s.worker.Store(w)
	s.wg.Add(1)
}

// closeSockets is the pair's closer (ports.Pair.SetCloser): the worker
// forgets the sockets, then they are closed.
func (s *Stream) closeSockets() {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.gone.Store(true)
	s.fastClose()
	if w := s.worker.Load(); w != nil {
		w.remove(s.rtpSock, s.rtcpSock)
		w.streams.Add(-1)
	} else {
		s.rtpSock.close()
		s.rtcpSock.close()
	}
	if s.started {
		s.wg.Done()
	}
}

// platformInit: the stream's pair is closed through the stream.
func (s *Stream) platformInit() { s.pair.SetCloser(s.closeSockets) }

// Wait blocks until the stream's sockets are closed and no worker relays
// them any more.
func (s *Stream) Wait() { s.wg.Wait() }

// schedule notes that s's jitter buffer has a packet due at due (unix
// nanoseconds); the worker goroutine only.
func (w *worker) schedule(s *Stream, due int64) {
	pl := s.play
	if pl.schedAt != 0 && pl.schedAt <= due {
		return // it wakes up earlier anyway
	}
	pl.schedAt = due
	w.heap.push(playEntry{due: due, s: s})
}

// play sends what every stream's jitter buffer has due by now plus
// playCoalesce.
func (w *worker) play(now time.Time) {
	now = now.Add(playCoalesce)
	t := now.UnixNano()
	for len(w.heap) > 0 && w.heap[0].due <= t {
		e := w.heap.pop()
		pl := e.s.play
		if pl.schedAt != e.due {
			continue // superseded by an earlier wake-up
		}
		pl.schedAt = 0
		if e.s.gone.Load() || pl.halted.Load() {
			continue
		}
		if next := w.p.playOut(e.s, now); next != 0 {
			w.schedule(e.s, next)
		}
	}
}

// playOut sends s's due packets out of its peer's socket, in one sendmmsg;
// it returns when the next one is due (0: none held).
func (p *pumpState) playOut(s *Stream, now time.Time) int64 {
	pl := s.play
	k := 0
	pl.mu.Lock()
	for k < batch {
		pkt, ok := pl.buf.Pop(now)
		if !ok {
			break
		}
		p.played[k] = pkt.Payload
		p.outIov[k].Base = &pkt.Payload[0]
		p.outIov[k].SetLen(len(pkt.Payload))
		k++
	}
	next := int64(0)
	if d, ok := pl.buf.NextDeadline(); ok {
		next = d.UnixNano()
	}
	pl.mu.Unlock()
	if k > 0 {
		p.s, p.nOut = s, k
		p.flush(&s.rtp, false)
		for i := range p.played[:k] {
			if p.w.ring != nil {
				p.sentHeld = append(p.sentHeld, p.played[i]) // sent by the ring's submit
			} else {
				p.w.held.put(p.played[i])
			}
			p.played[i] = nil
		}
	}
	return next
}

// heldBufs are the worker's buffers for the copies of packets its streams'
// jitter buffers hold: a free list, the worker goroutine's own. An RTP
// packet of up to smallBuf bytes (audio) gets a slot of a slab of them,
// contiguous, else a bufSize array. What a closed stream's buffer still
// held is left to the garbage collector.
//
// Why: with a sync.Pool of bufSize arrays (and the collector emptying it
// now and then), the packets held by 1600 streams (up to 7 each at
// 120 ms) were 2 KB apart, 22 MB in all, and each was cold by its playout
// time: copying them into sendmmsg was 9 % of the anchor's samples at 800
// calls with the adaptive buffer (perf record -e cpu-clock), packetPool
// and enqueue's copy 5 % more.
type heldBufs struct {
	small, big [][]byte
}

const (
	smallBuf  = 256
	slabBytes = 64 << 10
)

func (h *heldBufs) get(n int) []byte {
	if n > smallBuf {
		if k := len(h.big); k > 0 {
			b := h.big[k-1]
			h.big = h.big[:k-1]
			return b
		}
		return make([]byte, bufSize)
	}
	if len(h.small) == 0 {
		slab := make([]byte, slabBytes)
		for off := slabBytes - smallBuf; off >= 0; off -= smallBuf {
			h.small = append(h.small, slab[off:off+smallBuf:off+smallBuf])
		}
	}
	k := len(h.small)
	b := h.small[k-1]
	h.small = h.small[:k-1]
	return b
}

func (h *heldBufs) put(b []byte) {
	switch cap(b) {
	case smallBuf:
		h.small = append(h.small, b[:smallBuf])
	case bufSize:
		h.big = append(h.big, b[:bufSize])
	}
}

// playHeap is a min-heap of playout times.
type playHeap []playEntry

type playEntry struct {
	due int64
	s   *Stream
}

func (h *playHeap) push(e playEntry) {
	*h = append(*h, e)
	a := *h
	i := len(a) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if a[parent].due <= a[i].due {
			break
		}
		a[parent], a[i] = a[i], a[parent]
		i = parent
	}
}

func (h *playHeap) pop() playEntry {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a[last] = playEntry{}
	a = a[:last]
	*h = a
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(a) && a[l].due < a[m].due {
			m = l
		}
		if r < len(a) && a[r].due < a[m].due {
			m = r
		}
		if m == i {
			break
		}
		a[m], a[i] = a[i], a[m]
		i = m
	}
	return top
}

// sockets maps the index in an epoll event to its socket: chunks of
// atomic pointers, so a worker reads it without a lock. An event carries
// the socket's generation too: one taken for a socket removed since, whose
// index went to another socket (maybe another worker's), is ignored.
var sockets registry

const (
	chunkBits = 10
	chunkSize = 1 << chunkBits
	maxChunks = 1 << 12 // 4 M sockets
)

type registry struct {
	mu     sync.Mutex
	free   []uint32
	next   uint32
	gen    uint32
	chunks [maxChunks]atomic.Pointer[[chunkSize]atomic.Pointer[socket]]
}

// add sets k.idx and k.gen before k can be found.
func (r *registry) add(k *socket) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	k.gen = r.gen
	var i uint32
	if n := len(r.free); n > 0 {
		i = r.free[n-1]
		r.free = r.free[:n-1]
	} else {
		i = r.next
		r.next++
		if r.chunks[i>>chunkBits].Load() == nil {
			r.chunks[i>>chunkBits].Store(new([chunkSize]atomic.Pointer[socket]))
		}
	}
	k.idx = i
	r.chunks[i>>chunkBits].Load()[i&(chunkSize-1)].Store(k)
}

func (r *registry) remove(i uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chunks[i>>chunkBits].Load()[i&(chunkSize-1)].Store(nil)
	r.free = append(r.free, i)
}

func (r *registry) get(i uint32) *socket {
	if i>>chunkBits >= maxChunks {
		return nil
	}
	c := r.chunks[i>>chunkBits].Load()
	if c == nil {
		return nil
	}
	return c[i&(chunkSize-1)].Load()
}
