package statuspage

import "time"

// SetGuessClock sets the clock the replay attempts' budgets are counted by.
func SetGuessClock(h *Handler, now func() time.Time) { h.guesses.now = now }
