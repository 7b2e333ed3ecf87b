module github.com/xygroup/xygroup

go 1.26.8

require (
	github.com/rs/zerolog v1.35.1
	github.com/urfave/cli/v3 v3.14.0
	golang.org/x/sync v0.25.0
)

require (
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
