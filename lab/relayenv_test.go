package lab

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// Relay forwards TCP connections accepted inside a network namespace to an
// address of the test process's own namespace: a loopback service (the API
// server) becomes reachable at the same address from inside a lab host,
// whose loopback is its own. Its goroutines run in the test process; only
// the listening socket belongs to the namespace.
type Relay struct {
	// Addr is the address the relay listens on inside the namespace.
	Addr string
	// Target is where each connection is forwarded.
	Target string

	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
}

// StartRelay listens on listen (host:port) inside ns and forwards every
// connection to target, dialled from the test process's namespace. When the
// target refuses, the accepted connection is closed at once. Close stops it.
func StartRelay(ns *NetNS, listen, target string) (*Relay, error) {
	var ln net.Listener
	// The socket is made on a thread inside ns and stays there; Accept and
	// the copies can then run on any thread.
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", listen)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("relay %s in %s: %w", listen, ns.Name, err)
	}
	r := &Relay{Addr: listen, Target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.serve()
	return r, nil
}

func (r *Relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return // closed
		}
		r.wg.Add(1)
		go r.pipe(c)
	}
}

// track adds (or, with add false, removes) a connection; it refuses to add
// one once the relay is closed.
func (r *Relay) track(c net.Conn, add bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !add {
		delete(r.conns, c)
		return true
	}
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

// pipe copies between an accepted connection and a new one to Target until
// either side closes, then closes both (no half-close: the API server's
// clients never use it, and a target that went away must end the client's
// connection too).
func (r *Relay) pipe(in net.Conn) {
	defer r.wg.Done()
	defer in.Close()
	out, err := net.Dial("tcp", r.Target)
	if err != nil {
		return // as if refused
	}
	defer out.Close()
	if !r.track(in, true) || !r.track(out, true) {
		return
	}
	defer r.track(in, false)
	defer r.track(out, false)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(out, in)
	go cp(in, out)
	<-done
	in.Close()
	out.Close()
	<-done
}

// Close stops listening, closes every relayed connection and waits for the
// relay's goroutines.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	err := r.ln.Close()
	r.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// ServeIn makes the API server reachable at k.Server (https://127.0.0.1:PORT)
// from inside ns, through a Relay, so that daemons in a lab host use the
// admin kubeconfig (or any other) unchanged. The relay is closed when the
// test ends. While the API server is stopped, connections through the relay
// are accepted and closed at once (instead of refused).
//
// Serving a namespace that is served already does nothing (the kubelet's
// and drover's tests both need the server in a lab host).
func (k *Kube) ServeIn(t testing.TB, ns *NetNS) {
	t.Helper()
	k.mu.Lock()
	if k.served == nil {
		k.served = map[string]bool{}
	}
	if k.served[ns.Name] {
		k.mu.Unlock()
		return
	}
	k.served[ns.Name] = true
	k.mu.Unlock()
	t.Cleanup(func() { k.mu.Lock(); delete(k.served, ns.Name); k.mu.Unlock() })
	hostport := strings.TrimPrefix(k.Server, "https://")
	r, err := StartRelay(ns, hostport, hostport)
	if err != nil {
		t.Fatalf("serve the API server in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { _ = r.Close() })
}
