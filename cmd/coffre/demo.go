package main

import (
	"context"
	"log/slog"
	"os"

	"coffre/appliance"
)

func init() {
	register("demo", "the whole life of a vault on embedded defaults, in DIR", cmdDemo)
}

func cmdDemo(args []string) int {
	fs := newFlags("demo", "[--dir DIR] [--loop auto|yes|no]")
	dir := fs.String("dir", "demo-out", "directory to create (must be empty or absent)")
	loop := fs.String("loop", "auto", "loop devices over the drive images: auto (when root), yes, no")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	log := newLogger()
	if os.Getenv("COFFRE_LOG") == "" {
		// The demo tells its own story; the software keystore's warning is
		// said once in it rather than at every open.
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	if err := appliance.Demo(context.Background(), appliance.DemoOptions{Dir: *dir, Out: os.Stdout, Loop: *loop, Log: log}); err != nil {
		return fail(err)
	}
	return exitOK
}
