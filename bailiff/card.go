package bailiff

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"strings"

	"github.com/makiuchi-d/gozxing"
	zqr "github.com/makiuchi-d/gozxing/qrcode"
	qrcode "github.com/skip2/go-qrcode"
)

// Key card layout (docs/formats/roster.md, "Key card"): the protected
// secret key is cut into parts of at most cardChunk bytes; each part is one
// QR code (alphanumeric mode, ECC M, 6 px per module, 4-module quiet zone)
// whose text is
//
//	CFK1:<ID>:<PART>/<PARTS>:<CHECKSUM>:<BASE32 CHUNK>
//
// with ID 8 uppercase hex digits, PART and PARTS decimal (PART from 1),
// CHECKSUM the first 8 bytes of SHA-256 of the whole key in 16 uppercase hex
// digits, and the chunk in RFC 4648 base32 without padding. Every character
// is in the QR alphanumeric set, so decoders return it exactly. The
// codes are laid out left to right, two per row, each in a square cell of
// the same size; the image is always two cells wide.
const (
	cardMagic   = "CFK1"
	cardChunk   = 400
	cardModule  = 6
	cardColumns = 2
)

var cardB32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// KeyCard is a printable QR backup of a protected secret key.
type KeyCard struct {
	ID          string // 8 uppercase hex digits, printed on the card
	Checksum    string // 16 uppercase hex digits: SHA-256 of the key, printed on the card
	Fingerprint string
	Parts       int
	PNG         []byte
}

// Caption is the text to print beside the QR codes.
func (c *KeyCard) Caption() string {
	return fmt.Sprintf("COFFRE BAILIFF KEY CARD %s\nfingerprint %s\nchecksum %s\n%d QR codes, passphrase-protected (OpenPGP, S2K SHA-256, AES-256)\n",
		c.ID, c.Fingerprint, c.Checksum, c.Parts)
}

// NewKeyCard renders secret (a binary protected secret key) as a card.
func NewKeyCard(secret []byte, fingerprint string) (*KeyCard, error) {
	if len(secret) == 0 || len(secret) > cardChunk*MaxCardParts {
		return nil, fmt.Errorf("bailiff: key of %d bytes does not fit a card (%d parts of %d)", len(secret), MaxCardParts, cardChunk)
	}
	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(secret)
	parts := (len(secret) + cardChunk - 1) / cardChunk
	size := (len(secret) + parts - 1) / parts // even chunks, same QR version
	var imgs []image.Image
	cell := 0
	for p := 0; p < parts; p++ {
		chunk := secret[p*size : min((p+1)*size, len(secret))]
		payload := fmt.Sprintf("%s:%X:%d/%d:%X:%s", cardMagic, id[:], p+1, parts, sum[:8], cardB32.EncodeToString(chunk))
		q, err := qrcode.New(payload, qrcode.Medium)
		clearString(&payload)
		if err != nil {
			return nil, fmt.Errorf("bailiff: rendering key card part %d: %w", p+1, err)
		}
		img := q.Image(-cardModule)
		imgs = append(imgs, img)
		cell = max(cell, img.Bounds().Dx())
	}
	rows := (parts + cardColumns - 1) / cardColumns
	canvas := image.NewGray(image.Rect(0, 0, cell*cardColumns, cell*rows))
	draw.Draw(canvas, canvas.Bounds(), &image.Uniform{color.White}, image.Point{}, draw.Src)
	for i, img := range imgs {
		x, y := (i%cardColumns)*cell, (i/cardColumns)*cell
		draw.Draw(canvas, image.Rect(x, y, x+cell, y+cell), img, img.Bounds().Min, draw.Src)
	}
	var out bytes.Buffer
	if err := png.Encode(&out, canvas); err != nil {
		return nil, err
	}
	return &KeyCard{ID: fmt.Sprintf("%X", id[:]), Checksum: fmt.Sprintf("%X", sum[:8]), Fingerprint: fingerprint, Parts: parts, PNG: out.Bytes()}, nil
}

// ReadKeyCard scans a card PNG (as rendered by NewKeyCard) with gozxing
// and returns the protected secret key after checking the part headers and
// the checksum.
func ReadKeyCard(pngBytes []byte) ([]byte, error) {
	img, err := png.Decode(bytes.NewReader(pngBytes))
	if err != nil {
		return nil, fmt.Errorf("bailiff: key card is not a PNG: %w", err)
	}
	b := img.Bounds()
	cell := b.Dx() / cardColumns
	if cell <= 0 || b.Dx()%cardColumns != 0 || b.Dy()%cell != 0 || (b.Dy()/cell)*cardColumns > MaxCardParts+1 {
		return nil, errors.New("bailiff: key card image has an unexpected layout")
	}
	sub, ok := img.(interface {
		SubImage(image.Rectangle) image.Image
	})
	if !ok {
		return nil, errors.New("bailiff: key card image cannot be cropped")
	}
	var (
		parts  [][]byte
		id     string
		sum    string
		nparts int
	)
	reader := zqr.NewQRCodeReader()
	for y := b.Min.Y; y < b.Max.Y; y += cell {
		for x := b.Min.X; x < b.Max.X; x += cell {
			idx := len(parts)
			if nparts != 0 && idx >= nparts {
				break
			}
			bmp, err := gozxing.NewBinaryBitmapFromImage(sub.SubImage(image.Rect(x, y, x+cell, y+cell)))
			if err != nil {
				return nil, err
			}
			// Our own renders are pure codes; a photographed or reprinted
			// card needs the detector.
			res, err := reader.Decode(bmp, map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_PURE_BARCODE: true})
			if err != nil {
				res, err = reader.Decode(bmp, map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_TRY_HARDER: true})
			}
			if err != nil {
				return nil, fmt.Errorf("bailiff: key card part %d does not scan: %v", idx+1, err)
			}
			f := strings.Split(res.GetText(), ":")
			if len(f) != 5 || f[0] != cardMagic {
				return nil, fmt.Errorf("bailiff: key card part %d is not a Coffre key card code", idx+1)
			}
			var part, n int
			if _, err := fmt.Sscanf(f[2], "%d/%d", &part, &n); err != nil || fmt.Sprintf("%d/%d", part, n) != f[2] {
				return nil, fmt.Errorf("bailiff: key card part %d has a bad part number", idx+1)
			}
			if id == "" {
				id, nparts, sum = f[1], n, f[3]
				if nparts < 1 || nparts > MaxCardParts {
					return nil, fmt.Errorf("bailiff: key card declares %d parts", nparts)
				}
			}
			if f[1] != id || n != nparts || f[3] != sum {
				return nil, fmt.Errorf("bailiff: key card part %d belongs to another card", idx+1)
			}
			if part != idx+1 {
				return nil, fmt.Errorf("bailiff: key card part in position %d says it is part %d", idx+1, part)
			}
			chunk, err := cardB32.DecodeString(f[4])
			if err != nil {
				return nil, fmt.Errorf("bailiff: key card part %d: bad base32", idx+1)
			}
			parts = append(parts, chunk)
		}
	}
	if len(parts) != nparts || nparts == 0 {
		return nil, fmt.Errorf("bailiff: key card has %d of %d parts", len(parts), nparts)
	}
	key := bytes.Join(parts, nil)
	got := sha256.Sum256(key)
	if subtle.ConstantTimeCompare([]byte(fmt.Sprintf("%X", got[:8])), []byte(sum)) != 1 {
		clear(key)
		return nil, errors.New("bailiff: key card checksum mismatch; rescan or use the armored copy")
	}
	return key, nil
}
