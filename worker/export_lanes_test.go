package worker

// LaneSubject is the parked-stream subject of a tenant's lane (tests).
func LaneSubject(enterpriseID string) string { return parkedSubject(laneToken(enterpriseID)) }
