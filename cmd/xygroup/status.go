package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v3"

	"github.com/xygroup/xygroup/worker/clusterstatus"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "one screen: backlog, parked commands by meeting, in flight, limiter use, breakers, replicas",
		Flags: append(natsFlags(),
			&cli.BoolFlag{Name: "json", Usage: "print the status as JSON"},
			&cli.IntFlag{Name: "meetings", Value: 10, Usage: "how many parked meetings to list"},
		),
		Action: runStatus,
	}
}

// Status is what `xygroup status --json` prints.
type Status = clusterstatus.Status

func collectStatus(ctx context.Context, js jetstream.JetStream) (*Status, error) {
	return clusterstatus.Collect(ctx, js)
}

func runStatus(ctx context.Context, cmd *cli.Command) error {
	nc, err := connectNATS(cmd, "xygroup-status")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := collectStatus(sctx, js)
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	if cmd.Bool("json") {
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout(cmd), jsonSafe(b))
		return err
	}
	printStatus(stdout(cmd), st, cmd.Int("meetings"))
	return nil
}

// printStatus prints meetings, enterprises, reasons and replica names escaped
// (termSafe): they come from commands, the API and other processes.
func printStatus(out io.Writer, st *Status, maxMeetings int) {
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	defer tw.Flush()
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		d := st.At.Sub(t).Round(time.Second)
		if d < 0 {
			return "in " + (-d).String()
		}
		return d.String() + " ago"
	}
	fmt.Fprintf(tw, "COMMANDS\tbacklog %d\tunacknowledged %d (handled now, or waiting for a retry)\tredelivered %d\tstored %d\n",
		st.Backlog, st.Unacknowledged, st.Redelivered, st.Commands)
	fmt.Fprintf(tw, "EVENTS\tstored %d\tcancelled %d\tcancels rejected %d\n", st.Events, st.Cancelled, st.CancelRejected)
	fmt.Fprintf(tw, "PARKED\t%d command(s)\tin %d meeting(s), holds or lanes\n", st.Parked, len(st.Meetings))
	if len(st.Meetings) > 0 {
		fmt.Fprintln(tw, "  meeting\tenterprise\tstate\tparked\tprobes\tnext probe\twaiting since")
		for i, m := range st.Meetings {
			if i == maxMeetings {
				fmt.Fprintf(tw, "  … %d more\n", len(st.Meetings)-maxMeetings)
				break
			}
			name := m.Meeting
			switch {
			case m.Kind == "lane":
				name = "(tenant lane)"
			case name == "":
				name = "(breaker hold)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%s\t%s\n", termSafe(name), termSafe(m.EnterpriseID), termSafe(m.State), m.Parked, m.Probes, ago(m.NextProbeAt), ago(m.WaitingSince))
		}
	}
	if st.Limiter == nil {
		fmt.Fprintln(tw, "LIMITER\tno dispenser: no API call is being granted")
	} else {
		// One cell: as a column, the dispenser's name widened the enterprises' table below it.
		fmt.Fprintf(tw, "LIMITER\tdispenser %s, since %s\n", termSafe(st.Limiter.Replica), ago(st.Limiter.Since))
		ids := make([]string, 0, len(st.Limiter.Enterprises))
		for id := range st.Limiter.Enterprises {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		if len(ids) > 0 {
			fmt.Fprintln(tw, "  enterprise\tbudget/s\tused/s (last 10 s)\tmost in a second (last minute)\twaiting\tguard\t429s (10 min)\t429s (dispenser)")
		}
		for _, id := range ids {
			e := st.Limiter.Enterprises[id]
			use := float64(e.Granted10s) / 10
			fmt.Fprintf(tw, "  %s\t%g\t%.1f (%.0f%%)\tmax %d of %g\t%d\t%.0f ms\t%d\t%d\n", termSafe(id), e.Rate, use, 100*use/max(e.Rate, 0.001),
				e.MaxWindow1m, e.Rate, e.Waiting, e.GuardMs, e.Throttled10m, e.ThrottledTotal)
		}
	}
	fmt.Fprintf(tw, "BREAKERS\t%d tenant(s)\n", len(st.Breakers))
	for _, b := range st.Breakers {
		until := ""
		if b.State == "open" {
			until = "probe " + ago(b.OpenUntil) + ", reason " + termSafe(b.Reason)
			if b.LastFailure != "" {
				until += " (last: " + termSafe(b.LastFailure) + ")"
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\tfailures %d\topened %d time(s)\t%s\n", termSafe(b.EnterpriseID), termSafe(b.State), b.Failures, b.Opens, until)
	}
	fmt.Fprintf(tw, "REPLICAS\t%d alive\n", len(st.Replicas))
	for _, r := range st.Replicas {
		role := ""
		if r.Dispenser {
			role = "dispenser"
		}
		fmt.Fprintf(tw, "  %s\thandling %d, background %d, of %d slots (%s)\tup %s\t%s\n", termSafe(r.Name), r.InFlight, r.Background, r.Concurrency,
			ago(r.SeenAt), st.At.Sub(r.StartedAt).Round(time.Second), role)
	}
}
