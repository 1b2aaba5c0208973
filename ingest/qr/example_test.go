package qr_test

import (
	"bytes"
	"fmt"
	"os"

	"coffre/ingest/qr"
)

// The courier side renders frames; the appliance side reads them back.
func Example() {
	envelope := bytes.Repeat([]byte("sealed upload envelope "), 200)
	o := qr.Options{Version: 15, ECC: "M"}
	frames, err := qr.Encode(envelope, o)
	if err != nil {
		panic(err)
	}
	dir, _ := os.MkdirTemp("", "frames")
	defer os.RemoveAll(dir)
	if err := qr.WriteFrames(dir, frames, o); err != nil {
		panic(err)
	}
	msgs, err := qr.ReadDir(dir, qr.Limits{}, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(frames), "frames,", len(msgs), "message, intact:", bytes.Equal(msgs[0], envelope))
	// Output: 20 frames, 1 message, intact: true
}

// A decoder fed frame texts one at a time (from any camera source).
func ExampleDecoder() {
	msg := []byte("hello from the courier")
	enc, _ := qr.NewEncoder(msg, qr.Options{FragmentSize: 16})
	d := qr.NewDecoder(qr.Limits{MaxMessageLen: 1 << 20})
	for seq := 1; ; seq++ { // frame 0 was lost
		text, _ := enc.Frame(seq)
		p, err := d.AddFrame(text)
		if err != nil {
			continue
		}
		if p.Done {
			break
		}
	}
	m := d.Completed()[0]
	fmt.Printf("%s\n", m.Data)
	// Output: hello from the courier
}
