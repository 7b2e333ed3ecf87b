package xylink

// Modes of CreateGroupsRequest.Mode.
const (
	ModeRandom = "random" // the platform assigns attendees (the API's default)
	ModeManual = "manual" // the caller names each group's members
)

// CreateGroupsRequest is the body of dynamicGroup, field for field. Field order is
// the order of the API page's example, which matters for signature 1.0 only in that
// the bytes sent are the bytes signed.
type CreateGroupsRequest struct {
	MeetingRoomNumber string      `json:"meetingRoomNumber"`
	Mode              string      `json:"mode,omitempty"`
	GroupCount        *int        `json:"groupCount,omitempty"`
	GroupName         string      `json:"groupName,omitempty"`
	GroupList         []GroupSpec `json:"groupList,omitempty"`
}

// GroupSpec names one group's members in manual mode.
type GroupSpec struct {
	GroupName  string       `json:"groupName,omitempty"`
	MemberList []MemberSpec `json:"memberList"`
}

// MemberSpec identifies a participant device, as the meeting-status API reports it.
type MemberSpec struct {
	ID                int64  `json:"id"`
	Type              int    `json:"type"`
	ParticipantNumber string `json:"participantNumber,omitempty"`
}

// Group is one created group, as the API answers it.
type Group struct {
	GroupNo    string   `json:"groupNo"`
	GroupName  string   `json:"groupName"`
	MemberList []Member `json:"memberList"`
}

// Member is a group's member in the API's answer. ExternalUserID is null for devices
// without a third-party id.
type Member struct {
	ID                int64   `json:"id"`
	Type              int     `json:"type"`
	ExternalUserID    *string `json:"externalUserId"`
	ParticipantNumber string  `json:"participantNumber"`
	Admin             bool    `json:"admin"`
	CanSetAdmin       bool    `json:"canSetAdmin"`
}

// ErrorBody is the platform's error answer.
type ErrorBody struct {
	DeveloperMessage string `json:"developerMessage"`
	UserMessage      string `json:"userMessage"`
	ErrorCode        int    `json:"errorCode"`
	MoreInfo         string `json:"moreInfo,omitempty"`
}

// Business error codes of dynamicGroup.
const (
	CodeNoMeeting     = 66620 // no meeting in progress (not started yet, or ended)
	CodeAlreadyOpen   = 66684 // breakout discussion already open in this meeting
	CodeTooManyGroups = 66685 // more groups than the maximum
)
