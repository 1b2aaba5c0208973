// Package qr is Coffre's animated-QR transport: the one-way optical path that
// carries an opaque message (an upload envelope) from the online courier's
// screen to the offline appliance's camera.
//
// A message is cut into fixed-size fragments and sent as a fountain code:
// the first frames carry the fragments in order ("systematic" frames), the
// following ones carry XOR mixes of fragments whose degree and members are
// drawn from a PRNG keyed by the transfer id and the frame's sequence number.
// Any set of frames slightly larger than the fragment count rebuilds the
// message, in any order, with duplicates and losses. Each frame carries a
// versioned header (transfer id, message length, fragment size and count,
// sequence number, all capped by the limits in limits.go) and a CRC-32; the
// message carries a SHA-256 digest checked before it is handed out.
//
// Frames are binary, encoded as base45 (RFC 9285) behind the prefix "CQ" so
// that a QR code holds them in alphanumeric mode. The byte format is
// specified in docs/formats/qr.md.
//
// The package renders frames to PNG files and a self-contained HTML player,
// reads QR codes with gozxing from images, luminance planes, directories,
// video files (through ffmpeg) and V4L2 cameras, and decodes transfers with a
// Decoder whose memory is bounded by Limits.
package qr
