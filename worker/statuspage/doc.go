// Package statuspage serves the operators' status page: the whole cluster as
// the replicas share it (backlog, each tenant's budget, holds, waiting
// meetings, replicas, recent failures) at "/", and one command's calls and
// terminal event at "/commands/{id}". Any replica serves it from the shared
// state. What a visitor can take is bounded: readings are cached and few at
// once, replay attempts are paid for per client and overall, and only Host
// values a DNS rebinding cannot forge (localhost, IP addresses) or the
// configured names are served.
//
// The page is rendered on the server (html/template) and refreshes its live
// part with a short poll; it works without JavaScript (a meta refresh), and
// asks nothing of the browser but HTML, CSS and one small script, all
// embedded. It never shows a secret: credentials are not part of the state
// it reads, and the replay action's token is compared, never echoed.
//
// Actions are opt-in: with Options.Token set, a replay of a selection of
// failed commands can be started from the page, dry run first; without it,
// the page is read-only.
package statuspage
