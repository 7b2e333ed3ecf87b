package sandbox

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server is a running sandbox.
type Server struct {
	*Sandbox
	// URL is the base URL to give a client, e.g. http://127.0.0.1:40123.
	URL  string
	Addr string
	srv  *http.Server
	done chan error

	closeOnce sync.Once
	closeErr  error
}

// Start serves a new sandbox on addr ("127.0.0.1:0" picks a free port).
func Start(cfg Config, addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{Sandbox: New(cfg), Addr: ln.Addr().String(), done: make(chan error, 1)}
	s.URL = "http://" + s.Addr
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// Close stops the server within the context's time, cutting slow answers short.
// Calling it again returns the first call's result.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		err := s.srv.Shutdown(ctx)
		if err != nil {
			_ = s.srv.Close()
		}
		if serr := <-s.done; serr != nil {
			err = serr
		}
		s.closeErr = err
	})
	return s.closeErr
}
