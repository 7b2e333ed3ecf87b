package main

import "github.com/urfave/cli/v3"

func eventsCommand() *cli.Command {
	return &cli.Command{Name: "events", Usage: "tail or read back the event stream", Action: notYet}
}

func replayCommand() *cli.Command {
	return &cli.Command{Name: "replay", Usage: "re-publish failed or queued commands", Action: notYet}
}

func statusCommand() *cli.Command {
	return &cli.Command{Name: "status", Usage: "backlog, parked commands, limiter use, breaker state, replicas", Action: notYet}
}
