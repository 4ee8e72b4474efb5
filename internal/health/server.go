package health

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// Server limits. The listener may face every local user (and the network,
// off loopback): a client that opens connections and sends nothing, or
// sends slowly, must not hold goroutines and descriptors for long, and
// many of them must not exhaust the daemon's descriptors.
var (
	// readHeaderTimeout bounds a request's header (slowloris); a var so
	// tests can shorten it.
	readHeaderTimeout = 5 * time.Second
)

const (
	readTimeout  = 10 * time.Second // whole request; GETs have no body
	writeTimeout = 10 * time.Second // a metrics page is a few KiB
	idleTimeout  = 60 * time.Second // Prometheus keeps its connection between scrapes
	// maxHeaderBytes: probes and scrapers send a few hundred bytes.
	maxHeaderBytes = 8 << 10
	// maxConns: kubelet and a Prometheus or two need a handful; further
	// connections wait in the kernel's accept queue.
	maxConns = 32
	// shutdownWait bounds Close: in-flight requests get this long.
	shutdownWait = 2 * time.Second
)

// Config is what Listen and Handler need.
type Config struct {
	// Addr is the TCP address to listen on (IP:port; :port for every
	// address).
	Addr string
	// State returns the daemon's state now. Required.
	State func() State
	// Metrics writes the Prometheus text (metrics.Write). Required.
	Metrics func(io.Writer) error
	// ContentType is Metrics' media type (metrics.ContentType).
	ContentType string
	// Log receives server errors. Nil: discarded.
	Log *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Handler serves the three read-only endpoints and nothing else:
//
//	GET /healthz  200 "ok", or 503 and why the daemon is not alive (State.Live)
//	GET /readyz   200 "ok", or 503 and why it is not ready (State.Ready)
//	GET /metrics  the Prometheus text
//
// HEAD is served as GET without the body; other methods get 405, other
// paths 404.
func Handler(c Config) http.Handler {
	now := c.Now
	if now == nil {
		now = time.Now
	}
	mux := http.NewServeMux()
	probe := func(check func(State, time.Time) error) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h.Set("Content-Type", "text/plain; charset=utf-8")
			h.Set("Cache-Control", "no-store")
			h.Set("X-Content-Type-Options", "nosniff")
			if err := check(c.State(), now()); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, err.Error()+"\n")
				return
			}
			_, _ = io.WriteString(w, "ok\n")
		}
	}
	mux.Handle("GET /healthz", probe(State.Live))
	mux.Handle("GET /readyz", probe(State.Ready))
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", c.ContentType)
		w.Header().Set("Cache-Control", "no-store")
		_ = c.Metrics(w) // a client gone mid-write: nothing to tell it
	})
	return mux
}

// Server is a running listener; Close stops it.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Listen listens on c.Addr and serves Handler(c) until Close.
func Listen(c Config) (*Server, error) {
	if c.State == nil || c.Metrics == nil {
		return nil, errors.New("health: State and Metrics are required")
	}
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		ln:   ln,
		done: make(chan struct{}),
		srv: &http.Server{
			Handler:           Handler(c),
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(netutil.LimitListener(ln, maxConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	return s, nil
}

// Addr is the address listened on (with the port chosen for :0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting, lets requests in flight finish for up to 2 s,
// closes every connection and returns once the server has stopped.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}
