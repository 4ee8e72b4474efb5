package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"time"
)

// Stream is a flow of sequence-numbered UDP datagrams from one container to
// another at a fixed rate, for measuring loss and gaps while the control
// plane changes keys or routers restart. Every datagram's send time and
// first arrival are kept, so any window of the run can be judged.
type Stream struct {
	From, To ContainerRef
	Interval time.Duration

	id     uint64
	tx, rx *net.UDPConn
	dst    *net.UDPAddr
	stop   chan struct{}
	sendWG sync.WaitGroup
	recvWG sync.WaitGroup

	mu       sync.Mutex
	sent     []time.Time // by sequence number
	sendErrs []bool      // by sequence number
	arrived  []time.Time // by sequence number; zero: not (yet) arrived
	dups     int
	lastErr  error
}

// StreamStats judge the datagrams sent in a window.
type StreamStats struct {
	Sent       int
	Received   int
	Lost       int
	Duplicates int // extra copies delivered
	SendErrors int // sends the container's own stack refused (counted as lost)
	// LongestGap is the longest time the receiver went without a datagram
	// of the window (between consecutive arrivals, and from the window's
	// first send or to its last).
	LongestGap time.Duration
	// GapStart is when that gap began.
	GapStart time.Time
	// LongestBurst is the longest run of consecutive lost datagrams.
	LongestBurst int
}

func (s StreamStats) String() string {
	return fmt.Sprintf("%d sent, %d received, %d lost (longest burst %d), %d duplicates, %d send errors, longest gap %v",
		s.Sent, s.Received, s.Lost, s.LongestBurst, s.Duplicates, s.SendErrors, s.LongestGap.Round(100*time.Microsecond))
}

// streamMagic starts every datagram of a Stream.
const streamMagic = 0x6472762d73747265 // "drv-stre"

// streamPort is the receiver's UDP port.
const streamPort = 40400

// StartStream sends rate datagrams per second from container from to
// container to until Stop. The receiving socket is bound before the first
// datagram leaves.
func (l *Lab) StartStream(ctx context.Context, from, to ContainerRef, rate int) (*Stream, error) {
	if rate < 1 || rate > 100000 {
		return nil, fmt.Errorf("stream rate %d/s: want 1..100000", rate)
	}
	src, err := l.Container(from)
	if err != nil {
		return nil, err
	}
	dst, err := l.Container(to)
	if err != nil {
		return nil, err
	}
	s := &Stream{From: from, To: to, Interval: time.Second / time.Duration(rate), id: rand.Uint64(), stop: make(chan struct{})}
	s.dst = &net.UDPAddr{IP: dst.Addr.AsSlice(), Port: streamPort}
	err = dst.NS.Do(func() error {
		var err error
		s.rx, err = net.ListenUDP("udp4", s.dst)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stream: listen in %s: %w", to, err)
	}
	_ = s.rx.SetReadBuffer(4 << 20)
	err = src.NS.Do(func() error {
		var err error
		s.tx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: src.Addr.AsSlice()})
		return err
	})
	if err != nil {
		s.rx.Close()
		return nil, fmt.Errorf("stream: socket in %s: %w", from, err)
	}
	s.recvWG.Add(1)
	go s.receive()
	s.sendWG.Add(1)
	go s.send(ctx)
	return s, nil
}

func (s *Stream) send(ctx context.Context) {
	defer s.sendWG.Done()
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	buf := make([]byte, 64)
	binary.BigEndian.PutUint64(buf[0:8], streamMagic)
	binary.BigEndian.PutUint64(buf[8:16], s.id)
	for seq := uint64(0); ; seq++ {
		binary.BigEndian.PutUint64(buf[16:24], seq)
		s.mu.Lock()
		s.sent = append(s.sent, time.Now())
		s.arrived = append(s.arrived, time.Time{})
		s.sendErrs = append(s.sendErrs, false)
		s.mu.Unlock()
		if _, err := s.tx.WriteToUDP(buf, s.dst); err != nil {
			s.mu.Lock()
			s.sendErrs[seq] = true
			s.lastErr = err
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *Stream) receive() {
	defer s.recvWG.Done()
	buf := make([]byte, 2048)
	for {
		n, err := s.rx.Read(buf)
		if err != nil {
			return // closed by Stop
		}
		now := time.Now()
		if n < 24 || binary.BigEndian.Uint64(buf[0:8]) != streamMagic || binary.BigEndian.Uint64(buf[8:16]) != s.id {
			continue
		}
		seq := binary.BigEndian.Uint64(buf[16:24])
		s.mu.Lock()
		switch {
		case seq >= uint64(len(s.arrived)):
			// Not sent: cannot happen with one sender; ignored.
		case !s.arrived[seq].IsZero():
			s.dups++
		default:
			s.arrived[seq] = now
		}
		s.mu.Unlock()
	}
}

// Stop stops sending, waits up to drain for the last datagram to arrive
// (the ones in flight), and closes the sockets.
func (s *Stream) Stop(drain time.Duration) {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	s.sendWG.Wait()
	s.tx.Close()
	_ = Poll(context.Background(), drain, 5*time.Millisecond, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if n := len(s.arrived); n > 0 && s.arrived[n-1].IsZero() {
			return errors.New("last datagram not arrived")
		}
		return nil
	})
	s.rx.Close()
	s.recvWG.Wait()
}

// LastArrival is when the latest datagram arrived (zero: none yet), and
// its sequence number.
func (s *Stream) LastArrival() (time.Time, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last time.Time
	seq := -1
	for i, a := range s.arrived {
		if a.After(last) {
			last, seq = a, i
		}
	}
	return last, seq
}

// ArrivedSince reports whether a datagram sent at or after t has arrived.
func (s *Stream) ArrivedSince(t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.sent) - 1; i >= 0 && !s.sent[i].Before(t); i-- {
		if !s.arrived[i].IsZero() {
			return true
		}
	}
	return false
}

// Err is the last send error, if any.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Window judges the datagrams sent in [from, to); zero times are open
// ends. Duplicates are counted over the whole run.
func (s *Stream) Window(from, to time.Time) StreamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := StreamStats{Duplicates: s.dups}
	var arrivals []time.Time
	var first, last time.Time
	burst := 0
	for i, t := range s.sent {
		if (!from.IsZero() && t.Before(from)) || (!to.IsZero() && !t.Before(to)) {
			continue
		}
		if first.IsZero() {
			first = t
		}
		last = t
		st.Sent++
		if s.sendErrs[i] {
			st.SendErrors++
		}
		if a := s.arrived[i]; !a.IsZero() {
			st.Received++
			arrivals = append(arrivals, a)
			burst = 0
		} else {
			st.Lost++
			burst++
			st.LongestBurst = max(st.LongestBurst, burst)
		}
	}
	if st.Sent == 0 {
		return st
	}
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].Before(arrivals[j]) })
	edges := append([]time.Time{first}, arrivals...)
	if len(arrivals) == 0 || last.After(arrivals[len(arrivals)-1]) {
		edges = append(edges, last)
	}
	for i := 1; i < len(edges); i++ {
		if g := edges[i].Sub(edges[i-1]); g > st.LongestGap {
			st.LongestGap, st.GapStart = g, edges[i-1]
		}
	}
	return st
}
