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
//     measured on its own monotonic clock. Another replica can create the key
//     only after it expired, at least a second after the old dispenser stopped, so
//     two dispensers never grant for one enterprise at once, and the grants of the
//     old one are more than a second old when the new one starts. Wall-clock
//     differences between replicas play no part: only durations measured by each
//     replica, and the server's expiry, count.
//   - Spread: every replica writes "replica.<id>" every RenewEvery (it expires
//     like the leases), and follows the bucket's keys (revisions only, not
//     values). A replica takes a free shard (its lease missing, or unwritten for
//     LeaseTTL) only while it holds fewer than ceil(Shards / live replicas), and
//     hands one over each round while it holds more: it stops granting and
//     writes the lease a last time, and the shard waits for the lease to expire.
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
//     1 s + Guard holds at most rate grants. A grant's arrival at the API is the
//     grant time plus a delay (reply delivery, scheduling, the HTTP call); as long
//     as that delay varies by less than Guard less the 2 ms by which a late timer
//     may be made up (23 ms) between calls, no one-second window at the API holds
//     more than rate requests. The cost is the budget's Guard share: 20/s becomes
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
//   - Late grants: each grant says how long its request waited in the queue;
//     the rest of its round trip was spent on the way. A grant that took more
//     than 15 ms longer on its way than the shortest of the last 10 to 20
//     seconds (a pause of the requesting process or of NATS) may arrive
//     together with the enterprise's next grants at other replicas, so it is
//     not used and Wait asks again (Stats.Stale counts them). Only variation
//     counts: grants late in a row for 250 ms mean a network that got slower,
//     whose time becomes the usual one.
//   - Departures, not grants, are spaced: each request says its replica's
//     lead, the time it usually takes from a grant's dispatch to the call's
//     departure (half its round trip for the grant's way, one round trip for
//     the "sent" mark; before its first grant, from its round trip to its
//     NATS server). The dispenser grants a request that much before the
//     enterprise's next departure is due, so a replica farther from NATS
//     than the others (another zone) does not send its calls late into the
//     next ones' second; only variation around each replica's lead counts
//     against the guard.
//   - A guard that learns: a replica that gets HTTP 429 reports it, and the
//     dispenser widens that enterprise's guard by GuardStep (25 ms; the answers
//     of one crowded second count once), for the whole cluster; each 30 s
//     without one narrows it by a fifth of a step, back to its floor (Guard).
//     The delay between grant and API varies more over a real network than on
//     one host; the guard settles a little above that variation, at the cost
//     of guard/(1 s + guard) of the budget. The guard in use is in the lease,
//     so `xygroup status` and the metrics show it. An idle enterprise's queue
//     state is forgotten after a minute, its guard only once back at its floor.
//   - Failures: without a dispenser for the shard (none elected yet, NATS
//     unreachable, the dispenser's node lost), requests get no answer and Wait keeps asking until
//     its context ends: the limiter fails closed. No API call is made without a
//     grant, so the limit holds; the budget is unused for the seconds an election
//     takes (at most LeaseTTL).
//
// A grant costs one request and one reply on core NATS (no JetStream write), plus
// each shard's two lease renewals a second.
package ratelimit
