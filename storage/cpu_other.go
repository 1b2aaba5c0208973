//go:build !amd64

package storage

func cleanVector() {}
