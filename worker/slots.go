package worker

import (
	"context"
	"sync/atomic"
)

// slots is a replica's concurrency: one slot per command, probe or released
// command being handled, whatever its source. Shares of it keep one kind of
// work from taking every slot.
type slots struct {
	all chan struct{}
	// background: the slots that probes and letting out may hold; the rest
	// stay for the shared consumer, so that live commands always have a slot
	// however many parked commands a release hands out.
	background chan struct{}
	// letOut: the background slots that letting out may hold; the rest stay
	// for probes, so that a meeting that started is found however many
	// commands of meetings found before are being let out.
	letOut chan struct{}
	// reserved: slots taken by the pull request waiting for commands.
	reserved atomic.Int64
}

func newSlots(concurrency, background int) *slots {
	return &slots{all: make(chan struct{}, concurrency), background: make(chan struct{}, background),
		letOut: make(chan struct{}, max(1, background/2))}
}

// take waits for a slot, or for ctx to end (false).
func (s *slots) take(ctx context.Context) bool {
	select {
	case s.all <- struct{}{}:
		return ctx.Err() == nil || s.give() // both were ready: the end comes first
	case <-ctx.Done():
		return false
	}
}

// takeFree takes the slots free now, at most n, without waiting.
func (s *slots) takeFree(n int) int {
	got := 0
	for got < n {
		select {
		case s.all <- struct{}{}:
			got++
		default:
			return got
		}
	}
	return got
}

// put gives a slot back.
func (s *slots) put() { <-s.all }

// give puts a slot back and reports false, for take's refusal.
func (s *slots) give() bool {
	s.put()
	return false
}

// size is the number of slots.
func (s *slots) size() int { return cap(s.all) }

// waitAllFree takes every slot: it returns once nothing holds one.
func (s *slots) waitAllFree() {
	for range cap(s.all) {
		s.all <- struct{}{}
	}
}

// takeBackground takes a slot for background work (a probe, a released
// command): one of the background share, then one of the replica's slots.
func (s *slots) takeBackground(ctx context.Context) bool {
	select {
	case s.background <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	if !s.take(ctx) {
		<-s.background
		return false
	}
	return true
}

func (s *slots) putBackground() {
	s.put()
	<-s.background
}

// takeLetOut takes a slot for a released command: one of the letting-out
// share of the background slots, then a background slot.
func (s *slots) takeLetOut(ctx context.Context) bool {
	select {
	case s.letOut <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	if !s.takeBackground(ctx) {
		<-s.letOut
		return false
	}
	return true
}

func (s *slots) putLetOut() {
	s.putBackground()
	<-s.letOut
}
