package appliance

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"coffre/ingest/qr"
)

// cameraRetry is how long a camera that cannot be opened or stops giving
// pictures waits before it is tried again.
const cameraRetry = 5 * time.Second

// runCamera films the online machine's screen through a V4L2 camera for as
// long as the daemon runs. A camera that is unplugged or fails is reported
// once per distinct error on the console and retried; it never stops the
// daemon.
func (d *Daemon) runCamera(ctx context.Context, cam CameraConfig) {
	defer d.srcWG.Done()
	var lastErr string
	for ctx.Err() == nil {
		c, err := qr.OpenV4L2(cam.Device, cam.Width, cam.Height)
		if err == nil {
			w, h := c.Size()
			d.log.Info("camera open", "device", cam.Device, "width", w, "height", h)
			err = d.watchSource(ctx, "camera "+cam.Device, c)
			c.Close()
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("the camera stopped giving pictures")
		}
		if err.Error() != lastErr {
			lastErr = err.Error()
			d.event(cam.Device, err, "check the camera's cable and that it points at the online machine's screen; retrying every 5s")
		}
		select {
		case <-ctx.Done():
		case <-time.After(cameraRetry):
		}
	}
}

// watchSource decodes pictures from src until it ends or ctx is done,
// dispatching every upload rebuilt. A transfer that loops on the screen
// after it was rebuilt is recognised by the decoder and not dispatched
// again. Transfers filling up are shown as uploads in flight.
func (d *Daemon) watchSource(ctx context.Context, name string, src qr.Source) error {
	dec := qr.NewDecoder(qr.Limits{})
	progress := func(p qr.Progress) {
		key := "qr:" + p.Transfer.String()
		if p.Done {
			d.clearInflight(key)
			return
		}
		d.setInflight(key, &Inflight{Source: name, What: "QR transfer " + p.Transfer.String(), Percent: p.Percent})
	}
	defer func() {
		for _, p := range dec.InFlight() {
			d.clearInflight("qr:" + p.Transfer.String())
		}
	}()
	for {
		msgs, err := qr.Consume(ctx, src, dec, progress, 1)
		for _, m := range msgs {
			data := m.Data
			d.dispatch(ctx, name+" transfer "+m.Transfer.String(), func() (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(data)), nil
			})
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(msgs) == 0 {
			return nil // the source ended
		}
	}
}

// isVideoName reports whether a file in a QR spool directory is a recording
// of the screen rather than a single picture.
func isVideoName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".mp4", ".mkv", ".webm", ".avi", ".mov":
		return true
	}
	return false
}

// pollQRVideos starts decoding every new or changed video file in a QR
// spool directory (a screen recording made with a stand-alone camera). Each
// file is decoded once, in the background; a file still being copied is
// picked up again when it changes.
func (d *Daemon) pollQRVideos(ctx context.Context, dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return // pollQR reports a missing spool directory
	}
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") || !isVideoName(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p)
		if err != nil || !d.fresh(p, fi) {
			continue
		}
		d.srcWG.Add(1)
		go func() {
			defer d.srcWG.Done()
			v, err := qr.OpenVideo(ctx, p, 0)
			if err == nil {
				err = d.watchSource(ctx, "video "+p, v)
				if cerr := v.Close(); err == nil && ctx.Err() == nil {
					err = cerr
				}
			}
			if err != nil && ctx.Err() == nil {
				d.event(p, err, "the recording could not be read; record the screen again or drop the frames as pictures")
			}
		}()
	}
}
