package worker

// BreakerKey is the key of a tenant's record in BucketBreakers (tests).
func BreakerKey(enterpriseID string) string { return breakerKey(enterpriseID) }
