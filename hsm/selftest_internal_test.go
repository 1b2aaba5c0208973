package hsm

import (
	"errors"
	"strings"
	"testing"
)

func TestSelfTestPasses(t *testing.T) {
	if err := SelfTest(); err != nil {
		t.Fatal(err)
	}
	if len(SelfTestNames()) != 12 {
		t.Fatalf("SelfTest covers %d algorithms, want 12", len(SelfTestNames()))
	}
}

// Every KAT fails closed when its answer is wrong.
func TestSelfTestFailsClosed(t *testing.T) {
	defer func() { katCorrupt = "" }()
	for _, name := range SelfTestNames() {
		t.Run(name, func(t *testing.T) {
			katCorrupt = name
			err := SelfTest()
			if !errors.Is(err, ErrSelfTest) || !strings.Contains(err.Error(), name) {
				t.Fatalf("SelfTest with %s corrupted = %v", name, err)
			}
		})
	}
}
