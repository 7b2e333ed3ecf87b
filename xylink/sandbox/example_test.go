package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// The sandbox is a test kit: a real HTTP server speaking XYLink's API, whose
// meetings, failures and counts a test sets and reads in process.
func Example() {
	sb, err := sandbox.Start(sandbox.Config{Enterprises: []sandbox.Enterprise{{ID: "e1", Token: "t1"}}}, "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sb.Close(context.Background())
	api, _ := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: "e1", Token: "t1"}))
	ctx := context.Background()
	two := 2

	// A meeting that starts in an hour answers 66620: the worker parks such commands.
	_, _ = sb.AddMeeting(sandbox.MeetingSpec{Number: "910000000001", StartsIn: sandbox.Duration(time.Hour)})
	_, err = api.CreateGroups(ctx, "e1", &xylink.CreateGroupsRequest{MeetingRoomNumber: "910000000001", Mode: "random", GroupCount: &two})
	var ae *xylink.APIError
	if errors.As(err, &ae) {
		fmt.Println("not started:", ae.ErrorCode, xylink.Classify(err).Disposition)
	}

	// Once started, the same request creates the groups; a second answers 66684.
	sb.StartMeeting("910000000001")
	groups, err := api.CreateGroups(ctx, "e1", &xylink.CreateGroupsRequest{MeetingRoomNumber: "910000000001", Mode: "random", GroupCount: &two})
	fmt.Println("started:", len(groups), "groups", err)
	_, err = api.CreateGroups(ctx, "e1", &xylink.CreateGroupsRequest{MeetingRoomNumber: "910000000001", Mode: "random", GroupCount: &two})
	fmt.Println("again:", xylink.Classify(err).Class)

	// Faults: every create answers 503 until they are cleared.
	sb.SetFaults(sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 503}})
	_, err = api.CreateGroups(ctx, "e1", &xylink.CreateGroupsRequest{MeetingRoomNumber: "910000000002", Mode: "random", GroupCount: &two})
	fmt.Println("fault:", xylink.Classify(err).Disposition)
	sb.SetFaults(sandbox.Faults{})

	m, _ := sb.Meeting("910000000001")
	fmt.Println("creates:", m.Creates)
	// Output:
	// not started: 66620 park
	// started: 2 groups <nil>
	// again: already_open
	// fault: retry
	// creates: 1
}
