package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v3"

	"github.com/xygroup/xygroup/worker/contract"
)

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "read back or follow the event stream, with filters",
		Flags: append(natsFlags(),
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new events"},
			&cli.StringFlag{Name: "since", Usage: "from this time (RFC 3339) or this long ago (1h); default: the start of the stream"},
			&cli.StringFlag{Name: "until", Usage: "up to this time (RFC 3339) or this long ago"},
			&cli.StringSliceFlag{Name: "class", Usage: "only failures of these classes (repeat or comma-separate)"},
			&cli.StringFlag{Name: "type", Usage: "created, failed, waiting or cancel_rejected (a cancel that came too late)"},
			&cli.StringFlag{Name: "meeting", Usage: "only this meetingRoomNumber"},
			&cli.StringFlag{Name: "command", Usage: "only this commandId"},
			&cli.StringFlag{Name: "enterprise", Usage: "only this enterpriseId"},
			&cli.StringFlag{Name: "format", Value: "json", Usage: "json (one event a line) or table"},
		),
		Action: runEvents,
	}
}

// eventFilter selects events.
type eventFilter struct {
	subjects                     []string
	meeting, command, enterprise string
	since, until                 time.Time
}

func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (1h) nor an RFC 3339 time", s)
	}
	return t, nil
}

func eventSubjects(typ string, classes []string) ([]string, error) {
	names, err := failureClasses(classes)
	if err != nil {
		return nil, err
	}
	var subjects []string
	for _, c := range names {
		subjects = append(subjects, contract.SubjectFailed+"."+c)
	}
	switch typ {
	case "":
		if len(subjects) == 0 {
			subjects = []string{contract.SubjectCreated, contract.SubjectFailedAll, contract.SubjectWaiting}
		}
	case "created":
		subjects = []string{contract.SubjectCreated}
	case "waiting":
		subjects = []string{contract.SubjectWaiting}
	case "failed":
		if len(subjects) == 0 {
			subjects = []string{contract.SubjectFailedAll}
		}
	case "cancel_rejected":
		if len(subjects) > 0 {
			return nil, errors.New("--class selects failed events; --type cancel_rejected takes none")
		}
		subjects = []string{contract.SubjectCancelRejected}
	default:
		return nil, fmt.Errorf("--type %q is not an event type; the types are created, failed, waiting and cancel_rejected", typ)
	}
	return subjects, nil
}

func runEvents(ctx context.Context, cmd *cli.Command) error {
	now := time.Now()
	f := eventFilter{meeting: cmd.String("meeting"), command: cmd.String("command"), enterprise: cmd.String("enterprise")}
	var err error
	if f.subjects, err = eventSubjects(cmd.String("type"), cmd.StringSlice("class")); err != nil {
		return usageErrorf(cmd, "%v", err)
	}
	if f.since, err = parseWhen(cmd.String("since"), now); err != nil {
		return usageErrorf(cmd, "--since: %v", err)
	}
	if f.until, err = parseWhen(cmd.String("until"), now); err != nil {
		return usageErrorf(cmd, "--until: %v", err)
	}
	format := cmd.String("format")
	if format != "json" && format != "table" {
		return usageErrorf(cmd, "--format %q is not a format; the formats are json and table", format)
	}
	nc, err := connectNATS(cmd, "xygroup-events")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var tw *tabwriter.Writer
	if format == "table" {
		tw = tabwriter.NewWriter(stdout(cmd), 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tEVENT\tCOMMAND\tENTERPRISE\tMEETING\tATTEMPTS\tDETAIL")
		defer tw.Flush()
	}
	err = readEvents(ctx, js, f, cmd.Bool("follow"), func(subject string, data []byte) {
		if tw == nil {
			fmt.Fprintln(stdout(cmd), jsonSafe(data))
			return
		}
		printEventRow(tw, subject, data)
		if cmd.Bool("follow") {
			_ = tw.Flush()
		}
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return cli.Exit(err.Error(), 1)
	}
	return nil
}

// readEvents calls found for each event that passes the filter: all stored ones
// (from since), then, with follow, new ones until ctx ends.
func readEvents(ctx context.Context, js jetstream.JetStream, f eventFilter, follow bool, found func(subject string, data []byte)) error {
	r, err := contract.NewReader(ctx, js, contract.ReadOptions{Subjects: f.subjects, StartTime: f.since, Follow: follow})
	if err != nil {
		return fmt.Errorf("events stream: %w (has a worker started?)", err)
	}
	for msg, err := range r.Messages(ctx) {
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		meta := msg.Meta()
		if meta != nil && !f.until.IsZero() && meta.Timestamp.After(f.until) {
			if !follow {
				return nil
			}
			continue
		}
		e := msg.Identity()
		if (f.command != "" && e.CommandID != f.command) || (f.meeting != "" && e.MeetingRoomNumber != f.meeting) ||
			(f.enterprise != "" && e.EnterpriseID != f.enterprise) {
			continue
		}
		found(msg.Subject(), msg.Data())
	}
	return nil
}

func printEventRow(w io.Writer, subject string, data []byte) {
	var e contract.Event
	_ = json.Unmarshal(data, &e) // a field of another type stays empty; the others are read
	kind := strings.TrimPrefix(subject, "xylink.groups.")
	var detail string
	switch {
	case subject == contract.SubjectCreated && e.Reconciled:
		detail = "reconciled (groups exist; numbers not in hand)"
	case subject == contract.SubjectCreated:
		detail = fmt.Sprintf("%d group(s)", len(e.Groups))
	case subject == contract.SubjectWaiting:
		detail = waitingDetail(e, time.Now())
	case subject == contract.SubjectCancelRejected:
		detail = e.Reason + ": " + e.DeveloperMessage
	default:
		detail = e.UserMessage
		if e.ErrorCode != 0 {
			detail = fmt.Sprintf("%d %s", e.ErrorCode, detail)
		}
		switch {
		case e.DeveloperMessage == "":
		case e.ErrorCode == 0 && strings.HasPrefix(e.DeveloperMessage, e.UserMessage):
			detail = e.DeveloperMessage // "cancelled before any request…", not "cancelled: cancelled before…"
		default:
			detail += ": " + e.DeveloperMessage
		}
		if r := []rune(detail); len(r) > 100 {
			detail = string(r[:100]) + "…"
		}
	}
	// Every field comes from a publisher or from the API: printed escaped.
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.OccurredAt.Local().Format("2006-01-02 15:04:05"), termSafe(kind), termSafe(e.CommandID),
		termSafe(e.EnterpriseID), termSafe(e.MeetingRoomNumber), e.Attempts, termSafe(detail))
}

// waitingDetail says when a waiting command is tried next and when it stops
// being tried (its deadline; for a command scheduled ahead, its notBefore plus
// the workers' maximum wait), each with its date unless it is today.
func waitingDetail(e contract.Event, now time.Time) string {
	detail := "next attempt " + clockOrDate(e.NextAttemptAt, now)
	if !e.Deadline.IsZero() {
		detail += ", gives up at " + clockOrDate(e.Deadline, now)
	}
	return detail
}

// clockOrDate is t's local time of day, with its date when that is not now's.
func clockOrDate(t, now time.Time) string {
	t, now = t.Local(), now.Local()
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}
