//go:build soak

package storage

func init() { crashCycles = 1000 }
