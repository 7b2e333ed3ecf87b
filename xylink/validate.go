package xylink

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Limits the client enforces before sending. The API states which fields are
// required; the sizes are sane bounds for one meeting (the platform's own maxima
// are not public and come back as 66685).
const (
	MaxMeetingRoomNumberLen = 64
	MaxGroups               = 100
	MaxMembersPerGroup      = 1000
	MaxMembersTotal         = 5000
	MaxGroupNameRunes       = 64
	MaxParticipantNumberLen = 64
	MaxRequestBytes         = 256 << 10
)

// Validate checks a request against the rules of dynamicGroup:
//   - meetingRoomNumber is required: printable, no spaces, at most 64 bytes;
//   - mode is random (default) or manual;
//   - groupCount, when given, is between 1 and MaxGroups;
//   - manual mode needs a non-empty groupList whose groups each have members;
//   - a member has a positive id and type, and appears in one group only;
//   - names and numbers are valid UTF-8 within their bounds.
func (r *CreateGroupsRequest) Validate() error {
	var p []string
	add := func(format string, a ...any) { p = append(p, fmt.Sprintf(format, a...)) }

	switch {
	case r.MeetingRoomNumber == "":
		add("meetingRoomNumber is required")
	case len(r.MeetingRoomNumber) > MaxMeetingRoomNumberLen:
		add("meetingRoomNumber is longer than %d bytes", MaxMeetingRoomNumberLen)
	case !isToken(r.MeetingRoomNumber):
		add("meetingRoomNumber must be printable and without spaces")
	}
	switch r.Mode {
	case "", ModeRandom, ModeManual:
	default:
		add("mode must be %q or %q, not %q", ModeRandom, ModeManual, truncate(r.Mode, 32))
	}
	if r.GroupCount != nil && (*r.GroupCount < 1 || *r.GroupCount > MaxGroups) {
		add("groupCount must be between 1 and %d", MaxGroups)
	}
	checkName := func(what, name string) {
		if !utf8.ValidString(name) {
			add("%s is not valid UTF-8", what)
		} else if utf8.RuneCountInString(name) > MaxGroupNameRunes {
			add("%s is longer than %d characters", what, MaxGroupNameRunes)
		}
	}
	checkName("groupName", r.GroupName)

	if r.Mode == ModeManual && len(r.GroupList) == 0 {
		add("groupList is required in manual mode")
	}
	if len(r.GroupList) > MaxGroups {
		add("groupList has %d groups, more than %d", len(r.GroupList), MaxGroups)
	}
	total := 0
	seen := make(map[int64]int)
	for gi, g := range r.GroupList {
		checkName(fmt.Sprintf("groupList[%d].groupName", gi), g.GroupName)
		if len(g.MemberList) == 0 {
			add("groupList[%d].memberList is empty", gi)
		}
		if len(g.MemberList) > MaxMembersPerGroup {
			add("groupList[%d].memberList has more than %d members", gi, MaxMembersPerGroup)
		}
		total += len(g.MemberList)
		for mi, m := range g.MemberList {
			at := fmt.Sprintf("groupList[%d].memberList[%d]", gi, mi)
			if m.ID <= 0 {
				add("%s.id must be a positive device id", at)
			} else if prev, dup := seen[m.ID]; dup {
				add("%s.id %d is already in groupList[%d]", at, m.ID, prev)
			} else {
				seen[m.ID] = gi
			}
			if m.Type <= 0 {
				add("%s.type must be a positive device type", at)
			}
			if len(m.ParticipantNumber) > MaxParticipantNumberLen || (m.ParticipantNumber != "" && !isToken(m.ParticipantNumber)) {
				add("%s.participantNumber must be printable, without spaces, at most %d bytes", at, MaxParticipantNumberLen)
			}
		}
		if len(p) > 20 {
			add("(further problems not listed)")
			break
		}
	}
	if total > MaxMembersTotal {
		add("groupList has %d members, more than %d", total, MaxMembersTotal)
	}
	if len(p) > 0 {
		return &ValidationError{Problems: p}
	}
	return nil
}

func isToken(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
