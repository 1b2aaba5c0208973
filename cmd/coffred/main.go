// Command coffred is the Coffre appliance daemon: it watches its sources (QR
// frame directories, USB bundle images and devices), runs every upload
// through envelope open → escrow re-encryption → replicated append → catalog
// → receipt, and serves the local control socket. It opens no network socket.
//
//	coffred --config /etc/coffre/coffred.json
//
// SIGTERM or SIGINT finish or safely abandon the uploads in flight and exit 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"coffre/appliance"
	"coffre/ingest/usb"
)

func main() {
	usb.RunChildIfRequested()
	cfgPath := flag.String("config", "/etc/coffre/coffred.json", "configuration file (see docs/coffred.sample.json)")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: coffred --config FILE")
		os.Exit(2)
	}
	cfg, err := appliance.LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffred:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := appliance.RunDaemon(ctx, cfg, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "coffred:", err)
		os.Exit(1)
	}
}
