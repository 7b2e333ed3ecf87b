package worker

// LaneSubject is the parked-stream subject of a tenant's lane (tests).
func LaneSubject(enterpriseID string) string { return parkedSubject(laneToken(enterpriseID)) }

// MeetingSubject is the parked-stream subject of a waiting meeting (tests).
func MeetingSubject(enterpriseID, meeting string) string {
	return parkedSubject(meetingToken(enterpriseID, meeting))
}

// LaneStateSizes counts the tenants with per-enterprise state in the
// replica's lanes (tests).
func LaneStateSizes(w *Worker) (inPipe, intakeTurns, grantTurns, gauged int) { return w.lanes.sizes() }

// LanesServed is how many lanes the replica serves now, and the most it
// served at once (tests).
func LanesServed(w *Worker) (now, most int) {
	w.served.mu.Lock()
	defer w.served.mu.Unlock()
	return len(w.served.lanes), w.served.most
}

// MostLaneHandlers is the most lane commands in flight at once on the
// replica (tests).
func MostLaneHandlers(w *Worker) int {
	w.lanes.mu.Lock()
	defer w.lanes.mu.Unlock()
	return w.lanes.mostHandlers
}
