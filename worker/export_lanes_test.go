package worker

// LaneSubject is the parked-stream subject of a tenant's lane (tests).
func LaneSubject(enterpriseID string) string { return parkedSubject(laneToken(enterpriseID)) }

// MeetingSubject is the parked-stream subject of a waiting meeting (tests).
func MeetingSubject(enterpriseID, meeting string) string {
	return parkedSubject(meetingToken(enterpriseID, meeting))
}
