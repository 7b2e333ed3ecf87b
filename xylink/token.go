package xylink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Paths of the signature 2.0 token endpoints (not signed themselves).
const (
	AppTokenPath     = "/admin/login/oauth/app_token"
	RefreshTokenPath = "/admin/login/refresh_token"
)

// appToken is a signature 2.0 app token and what comes with it.
type appToken struct {
	access     Secret
	refresh    Secret
	signSecret Secret
	expiresAt  time.Time
	refreshAt  time.Time
}

// refreshMargin is how long before expiry a token is renewed. XYLink's SDK renews
// 1800 s early; short-lived tokens (as in tests) renew at three quarters of their life.
func refreshMargin(lifetime time.Duration) time.Duration {
	return min(30*time.Minute, lifetime/4)
}

// tokenAnswer is the body of both token endpoints.
type tokenAnswer struct {
	Message string `json:"message"`
	Data    *struct {
		AccessToken  Secret `json:"access_token"`
		RefreshToken Secret `json:"refresh_token"`
		SignSecret   Secret `json:"signSecret"`
		ExpiresIn    int64  `json:"expires_in"`
	} `json:"data"`
}

// CredentialsError: the platform refused the tenant's client id or secret.
type CredentialsError struct {
	EnterpriseID string
	HTTPStatus   int
	Reason       string
}

func (e *CredentialsError) Error() string {
	return fmt.Sprintf("xylink: enterprise %s: app token refused (HTTP %d): %s", e.EnterpriseID, e.HTTPStatus, e.Reason)
}

// fetchFunc asks the platform for a token: with a refresh token when it is not
// empty, else with the client credentials.
type fetchFunc func(ctx context.Context, refresh Secret) (*appToken, error)

// tokenSource caches one tenant's app token. However many calls wait for a token,
// one request is made (singleflight). A token is renewed ahead of time, in the
// background, while it still serves: calls never wait on a renewal, only on the
// first fetch and on the fetch after the API rejected a token.
type tokenSource struct {
	fetch   fetchFunc
	now     func() time.Time
	timeout time.Duration

	mu        sync.Mutex
	current   *appToken
	renewNext time.Time // no background renewal starts before this
	flight    singleflight.Group
	fetches   int // requests made, for metrics and tests
}

// renewRetry spaces background renewals that failed.
const renewRetry = time.Second

// get returns a usable token: the cached one (starting its renewal in the
// background once it is due), or a new one when there is none or it expired.
func (s *tokenSource) get(ctx context.Context) (*appToken, error) {
	s.mu.Lock()
	cur := s.current
	now := s.now()
	renew := cur != nil && !now.Before(cur.refreshAt) && now.Before(cur.expiresAt) && !now.Before(s.renewNext)
	if renew {
		s.renewNext = now.Add(renewRetry)
	}
	s.mu.Unlock()
	if cur != nil && now.Before(cur.refreshAt) {
		return cur, nil
	}
	if cur != nil && now.Before(cur.expiresAt) {
		if renew {
			s.flight.DoChan("token", func() (any, error) { return s.renew(ctx) })
		}
		return cur, nil
	}
	select {
	case r := <-s.flight.DoChan("token", func() (any, error) { return s.renew(ctx) }):
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*appToken), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// renew fetches a new token (with the refresh token when there is one) and
// caches it. It outlives any one caller: later callers wait for it too.
func (s *tokenSource) renew(ctx context.Context) (*appToken, error) {
	s.mu.Lock()
	cur := s.current
	s.mu.Unlock()
	if cur != nil && s.now().Before(cur.refreshAt) {
		return cur, nil // another flight renewed it meanwhile
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	var t *appToken
	var err error
	if cur != nil && cur.refresh != "" {
		t, err = s.count(fctx, cur.refresh)
	}
	if t == nil {
		var credErr *CredentialsError
		if err != nil && !errors.As(err, &credErr) && cur != nil && s.now().Before(cur.expiresAt) {
			return cur, nil // the refresh failed for a passing reason; the old token still works
		}
		t, err = s.count(fctx, "")
	}
	if err != nil {
		if cur != nil && s.now().Before(cur.expiresAt) {
			var credErr *CredentialsError
			if !errors.As(err, &credErr) {
				return cur, nil
			}
		}
		return nil, err
	}
	s.mu.Lock()
	s.current = t
	s.mu.Unlock()
	return t, nil
}

// newest returns the cached token when it is newer than t and usable, else t;
// it makes no request.
func (s *tokenSource) newest(t *appToken) *appToken {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.current; cur != nil && cur != t && s.now().Before(cur.expiresAt) {
		return cur
	}
	return t
}

func (s *tokenSource) count(ctx context.Context, refresh Secret) (*appToken, error) {
	s.mu.Lock()
	s.fetches++
	s.mu.Unlock()
	return s.fetch(ctx, refresh)
}

// invalidate drops t if it is still the cached token, so that the next get fetches
// a new one with the client credentials.
func (s *tokenSource) invalidate(t *appToken) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == t {
		s.current = nil
	}
}

func (s *tokenSource) fetchCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches
}
