package envelope

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"
)

// TestNoGoroutineLeak: uploads that fail in Open, that are read to the end,
// or that are abandoned and closed leave no hashing goroutine behind.
func TestNoGoroutineLeak(t *testing.T) {
	k := getKeys(t)
	content := bytes.Repeat([]byte("0123456789"), 100000)
	m := testManifest(content)
	good := bind(t, k.courier, m.UserID, NewUploadID(), seal(t, k.ingest, m, content))
	before := runtime.NumGoroutine()
	for i := 0; i < 20; i++ {
		// Read to the end.
		if _, _, err := openAll(good, params(k)); err != nil {
			t.Fatal(err)
		}
		// Fails inside Open (user mismatch after decryption started).
		bad := bind(t, k.courier, "mallory@example.org", NewUploadID(), seal(t, k.ingest, m, content))
		if _, err := Open(bytes.NewReader(bad), params(k)); !errors.Is(err, ErrUserMismatch) {
			t.Fatal(err)
		}
		// Abandoned half-way, then closed; reading after Close fails.
		up, err := Open(bytes.NewReader(good), params(k))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(up.Content, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		up.Close()
		if _, err := io.ReadAll(up.Content); err == nil {
			t.Fatal("content read after Close succeeded")
		}
	}
	// Goroutines exit asynchronously after stop; wait for them (this is a
	// bound on leaking, not a timing assertion).
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Fatalf("%d goroutines before, %d after", before, n)
	}
}
