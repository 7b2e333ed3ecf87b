package main

import "github.com/urfave/cli/v3"

func workerCommand() *cli.Command {
	return &cli.Command{Name: "worker", Usage: "run one worker replica (the main job)", Action: notYet}
}

func publishCommand() *cli.Command {
	return &cli.Command{Name: "publish", Usage: "publish commands (a JSON object, a JSON array or NDJSON)", ArgsUsage: "[FILE|-]", Action: notYet}
}

func eventsCommand() *cli.Command {
	return &cli.Command{Name: "events", Usage: "tail or read back the event stream", Action: notYet}
}

func replayCommand() *cli.Command {
	return &cli.Command{Name: "replay", Usage: "re-publish failed or queued commands", Action: notYet}
}

func statusCommand() *cli.Command {
	return &cli.Command{Name: "status", Usage: "backlog, parked commands, limiter use, breaker state, replicas", Action: notYet}
}
