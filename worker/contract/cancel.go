package contract

// Cancelling a command before it is sent: a cancel message on SubjectCancel
// names one command (CommandID) or every command of a meeting
// (MeetingRoomNumber). A command not sent yet ends as failed.cancelled; one
// that may have been sent, or is done, is answered on SubjectCancelRejected.
const (
	SubjectCancel         = "xylink.groups.cancel"
	SubjectCancelRejected = "xylink.groups.cancel_rejected"
	TypeCancelRejected    = "com.xylink.groups.cancel_rejected"
	// ClassCancelled is the failure class of a cancelled command
	// (SubjectFailed + ".cancelled").
	ClassCancelled = "cancelled"
)

// Why a cancel could not cancel a command (CancelRejected.Reason).
const (
	RejectedAlreadySent = "already_sent" // a request for it may have left
	RejectedInFlight    = "in_flight"    // its request is at XYLink now
	RejectedDone        = "done"         // it has its terminal event
	RejectedInvalid     = "invalid"      // the cancel message is not one
)

// Cancel is the message on SubjectCancel: CommandID or MeetingRoomNumber,
// not both. EnterpriseID "" is the workers' default tenant.
type Cancel struct {
	CommandID         string `json:"commandId,omitempty"`
	MeetingRoomNumber string `json:"meetingRoomNumber,omitempty"`
	EnterpriseID      string `json:"enterpriseId,omitempty"`
	Reason            string `json:"reason,omitempty"`
}

// CancelRejected is the answer on SubjectCancelRejected for a command a
// cancel did not cancel. CancelID names the cancel: its Nats-Msg-Id, else
// <stream>:<sequence>.
type CancelRejected struct {
	Envelope
	CancelID     string `json:"cancelId"`
	Reason       string `json:"reason"`
	CancelReason string `json:"cancelReason,omitempty"`
	// Outcome: the terminal event's subject, when Reason is done.
	Outcome          string `json:"outcome,omitempty"`
	DeveloperMessage string `json:"developerMessage"`
}
