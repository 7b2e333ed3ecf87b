package statuspage

import (
	"fmt"
	"time"

	"github.com/xygroup/xygroup/worker/ratelimit"
)

// chart is a tenant's use per ten seconds against its rate, drawn as SVG
// bars in a fixed viewBox: the template places the numbers computed here.
type chart struct {
	Width, Height float64
	Bars          []bar
	// RateY is the height of the tenant's rate line.
	RateY float64
	Label string
}

type bar struct {
	X, Y, W, H float64
	Throttled  bool
	Title      string
}

const chartW, chartH = 300.0, 60.0

func budgetChart(e ratelimit.EnterpriseInfo, end time.Time) chart {
	ws := e.Windows(end)
	c := chart{Width: chartW, Height: chartH}
	top := e.Rate * 1.25 // room above the rate line: use above the rate shows
	for _, w := range ws {
		top = max(top, float64(w.Granted)/10)
	}
	if top <= 0 {
		top = 1
	}
	scale := (chartH - 2) / top
	c.RateY = chartH - e.Rate*scale
	if len(ws) == 0 {
		c.Label = "no use in the last five minutes (or not among the busiest enterprises, whose history the limiter keeps)"
		return c
	}
	step := chartW / float64(len(ws))
	for i, w := range ws {
		perSecond := float64(w.Granted) / 10
		hgt := perSecond * scale
		title := fmt.Sprintf("%s–%s UTC: %.1f/s of %g/s", w.Start.Format("15:04:05"), w.Start.Add(10*time.Second).Format("15:04:05"), perSecond, e.Rate)
		if w.Throttled > 0 {
			title += fmt.Sprintf(", %d answered 429", w.Throttled)
		}
		c.Bars = append(c.Bars, bar{X: float64(i) * step, Y: chartH - hgt, W: step - 1, H: hgt, Throttled: w.Throttled > 0, Title: title})
	}
	c.Label = fmt.Sprintf("requests per second, ten-second windows, the last %d minutes, against the rate of %g/s", len(ws)*10/60, e.Rate)
	return c
}
