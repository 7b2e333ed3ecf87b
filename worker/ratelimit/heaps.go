package ratelimit

import (
	"time"

	"github.com/nats-io/nats.go"
)

// dueHeap orders enterprises with waiting requests by dueAt.
type dueHeap []*enterpriseQueue

func (h dueHeap) Len() int { return len(h) }

func (h dueHeap) Less(i, j int) bool { return h[i].dueAt.Before(h[j].dueAt) }

func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *dueHeap) Push(x any) {
	q := x.(*enterpriseQueue)
	q.index = len(*h)
	*h = append(*h, q)
}

func (h *dueHeap) Pop() any {
	old := *h
	q := old[len(old)-1]
	old[len(old)-1] = nil
	q.index = -1
	*h = old[:len(old)-1]
	return q
}

type pending struct {
	msg      *nats.Msg
	priority Priority
	seq      uint64
	arrived  time.Time
	lead     time.Duration // from dispatch to departure at the requester (grantRequest.Lead)
}

type requestHeap []*pending

func (h requestHeap) Len() int { return len(h) }

func (h requestHeap) Less(i, j int) bool {
	if ri, rj := h[i].priority.rank(), h[j].priority.rank(); ri != rj {
		return ri < rj
	}
	return h[i].seq < h[j].seq
}

func (h requestHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }

func (h *requestHeap) Push(x any) { *h = append(*h, x.(*pending)) }

func (h *requestHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	*h = old[:len(old)-1]
	return p
}
