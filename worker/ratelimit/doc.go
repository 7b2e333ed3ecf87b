// Package ratelimit grants XYLink API calls: one budget per enterprise (20 calls
// a second by default) for the whole cluster of workers, built on the NATS
// cluster they already use.
//
// # Design: an elected dispenser per shard
//
// XYLink counts requests per enterprise in any sliding second. A limiter per
// replica breaks that as soon as a second replica runs, and a static split (20/N)
// wastes the budget whenever the backlog sits on one replica. Compare-and-swap
// on a shared "theoretical arrival time" (GCRA) costs two round trips a grant and
// its conflicts grow with the number of contenders. So, for each enterprise, one
// replica at a time, the dispenser of its shard, hands out every grant:
//
//   - Shards: an enterprise belongs to shard FNV-1a(enterprise id) mod Shards
//     (16). Each shard has its own lease and its own dispenser, which may be any
//     replica: the grant work spreads over the replicas, and a failover moves the
//     shards of one replica only. Every replica must use the same number of
//     shards: it is part of the subjects (a replica with another number reaches
//     no dispenser and gets no grant, rather than a second dispenser) and of the
//     fence (below), and a replica whose number differs takes no shard.
//   - Election: a shard's dispenser holds the key "shard.<n>" of the
//     xygroup-limiter bucket, whose entries expire LeaseTTL (3 s) after their last
//     write. It renews every RenewEvery (500 ms) with compare-and-swap, and stops
//     granting StopAfter (1.5 s) after its last successful renewal was sent,
//     measured on its own monotonic clock. That is a pause, not a step-down: it
//     keeps renewing (presence, fence and leases written at once, each given
//     StopAfter), grants again once a renewal gets through, and steps down
//     only when the lease is another's or LeaseTTL has passed since its last
//     renewal was sent (until then no other replica can have created it): a
//     host or NATS server slowed by load costs pauses, not elections and
//     their seconds without a dispenser. Another replica can create the key
//     only after it expired, at least a second after the old dispenser stopped, so
//     two dispensers never grant for one enterprise at once, and the grants of the
//     old one are more than a second old when the new one starts. Wall-clock
//     differences between replicas play no part: only durations measured by each
//     replica, and the server's expiry, count.
//   - Spread: every replica writes "replica.<id>" every RenewEvery (it expires
//     like the leases), and follows the bucket's keys (revisions only, not
//     values). A replica takes a free shard (its lease missing, or unwritten for
//     LeaseTTL) only while it holds fewer than ceil(Shards / live replicas), and
//     hands one over each round while it holds more, once the count of live
//     replicas has held still for 10 s (a replica cut off and back moves
//     nothing), the least busy first (fewest requests waiting and grants in
//     the last 10 s: an idle shard's move holds up no grant): it stops
//     granting and writes the lease a last time, and the shard waits for the
//     lease to expire.
//     A replica starting takes no shard in its first round, so that replicas
//     started together count each other. The leases cost Shards writes per
//     RenewEvery cluster-wide (32 a second with 16 shards), the presence and
//     fence two per replica.
//   - State across failover: a shard's lease carries, per enterprise whose
//     learned guard is above its floor, the guard's width above the floor and
//     the time since it last changed (durations, not instants). A replica reads
//     a lease once it has gone unwritten for StopAfter (its dispenser stopped),
//     before it expires, and the shard's next dispenser starts from it: a
//     failover does not start a new round of 429s. Queues are not handed over
//     (their requesters are told to ask again, or time out and ask again), nor
//     is spacing: the next dispenser starts more than a second after the old
//     one's last grant, so no second holds grants of both.
//   - Earlier versions: their single dispenser held the key "dispenser" and
//     answered on xygroup.limiter.grant. That key is now a fence: every replica
//     rewrites it each round (compare-and-swap), so no earlier version is elected
//     while shards are dispensed, and shards stop granting StopAfter after the
//     last read that saw the fence rewritten (an earlier version elected once the
//     fence expired starts more than a second later). Earlier versions' requests
//     and reports are passed on to the shards' dispensers. While an earlier
//     version's dispenser holds the key, this version asks it for grants and
//     takes no shard, until it stops.
//   - Grants: a replica that needs one sends a request (enterprise, priority, rate)
//     to xygroup.limiter.grant.<shards>.<shard>; the dispenser answers when the
//     grant is due. Per
//     enterprise it spaces grants (1 s + Guard) / rate apart, so any window of
//     1 s + Guard holds at most rate grants; the departure window below keeps
//     that true at the API. The cost is the budget's Guard share: 20/s becomes
//     19.5/s.
//   - Priorities: each enterprise has a queue ordered by priority (live first
//     attempts, then retries and probes, then replays), first come first served
//     within one. A live request waits at most for the grant being timed and for
//     the live requests before it, whatever the replay backlog.
//   - Order: a request is a publish with a reply subject on the replica's one
//     reply subscription, and core NATS keeps one connection's messages in
//     order, so a request's place in the queue is fixed when its publish
//     returns. Wait's Queued option says so: a caller that keeps an order among
//     its requests (a tenant's lane) asks for the next grant then, not one
//     round trip later. Every answer names the request's place (the
//     dispenser and its sequence there): a request told to ask again (its
//     queue longer than MaxQueueWait) or whose grant came too late to use
//     asks again at that place, before the requests that came after it. Only
//     a change of dispenser loses the places.
//   - Departures, not grants, are spaced: the dispenser grants a request
//     its replica's lead before the enterprise's next departure is due (the
//     lead travels with the request), so a replica farther from NATS (another
//     zone), or whose "sent" mark takes longer, is granted that much earlier.
//   - One invariant, checked right before each request is written (see
//     Departure): a request leaves within [D + lead, D + lead + budget], D
//     being when the dispenser decided its grant. The replica bounds D on
//     its own clock: after its request's sending plus its queue time plus
//     half the shortest recent transit, before the grant's arrival (taken
//     when its subscription receives it, not when the caller runs) less that
//     half (the two ways' shortest times are taken to be equal, as NTP takes
//     them). It waits for the window's start (a grant that came early is
//     held) and refuses to send after its end: the grant's way beyond the
//     usual, the "sent" mark, a pause of the process, a fresh TLS dial all
//     spend the one budget. A grant whose window is empty on arrival, or
//     passed before the write, is not used; the request takes a fresh one at
//     its place. The thresholds are learned, not set: the lead is the second
//     longest of the replica's last 64 times from D's bound to readiness;
//     the shortest transit is that of the last 10 to 20 seconds, and grants
//     whose windows were empty in a row for 250 ms (a network that got
//     slower, not a pause) make the shortest of them the new one. The budget
//     is half of the guard less maxCatchUp, given by the dispenser with each
//     grant.
//     Why this bounds the window at the API: the departures the dispenser
//     spaces are (1 s + guard) / rate apart, and any rate + 1 of them span at
//     least 1 s + guard - maxCatchUp. Each request leaves at most budget after
//     its own, never before, so any rate + 1 departures span at least
//     1 s + guard - maxCatchUp - budget = 1 s + budget; the other half of the
//     guard absorbs the variation of the way from a replica to the API, and
//     any difference between a network's two ways. The guard widens on 429,
//     and the budget with it.
//   - A guard that learns: a replica that gets HTTP 429 reports it, and the
//     dispenser widens that enterprise's guard by GuardStep (25 ms; the answers
//     of one crowded second count once), for the whole cluster; each 30 s
//     without one narrows it by a fifth of a step, back to its floor (Guard).
//     The delay between grant and API varies more over a real network than on
//     one host; the guard settles a little above that variation, at the cost
//     of guard/(1 s + guard) of the budget. The guard in use is in the lease,
//     so `xygroup status` and the metrics show it. An idle enterprise's queue
//     state is forgotten after a minute, its guard only once back at its floor.
//   - An audit: the dispenser keeps the departures it scheduled (each grant
//     plus its request's lead) and writes in its lease, per enterprise, the
//     most in any sliding second of the last minute, and the rate-limit
//     answers reported to it (audit.go): `xygroup status`, the status page
//     and the metrics show "max 20 of 20" from the one place that decides.
//   - Failures: without a dispenser for the shard (none elected yet, NATS
//     unreachable, the dispenser's node lost), requests get no answer and Wait keeps asking until
//     its context ends: the limiter fails closed. No API call is made without a
//     grant, so the limit holds; the budget is unused for the seconds an election
//     takes (at most LeaseTTL). A shard's new dispenser announces itself on
//     xygroup.limiter.elected.<shards>.<shard>, and the requests then waiting
//     on that shard (sent to a dispenser cut off, whose answer would never
//     come) are sent to it at once rather than after their timeout.
//
// A grant costs one request and one reply on core NATS (no JetStream write), plus
// each shard's two lease renewals a second.
package ratelimit
