package bailiff

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"strings"

	"github.com/makiuchi-d/gozxing"
	zqr "github.com/makiuchi-d/gozxing/qrcode"
	qrcode "github.com/skip2/go-qrcode"

	"coffre/bailiff/shamir"
)

// ShareQR renders share card text (as `gpg --decrypt` of a share message
// prints it) as a QR code PNG (ECC M, 6 px per module, 4-module quiet zone)
// for a bailiff to carry back. The card is first checked with
// shamir.ParseCard. The PNG is secret material.
func ShareQR(card []byte) ([]byte, error) {
	s, err := shamir.ParseCard(string(card))
	if err != nil {
		return nil, err
	}
	s.Wipe()
	q, err := qrcode.New(strings.TrimSpace(string(card)), qrcode.Medium)
	if err != nil {
		return nil, fmt.Errorf("bailiff: share QR: %w", err)
	}
	var out bytes.Buffer
	if err := png.Encode(&out, q.Image(-cardModule)); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// ReadShareQR scans a share QR (a PNG, or a camera still in any format the
// image package decodes) and returns the card text for Unlock.AddShareCard.
// The card's own checksum catches any misread.
func ReadShareQR(pic []byte) ([]byte, error) {
	img, _, err := image.Decode(bytes.NewReader(pic))
	if err != nil {
		return nil, fmt.Errorf("bailiff: share QR image: %w", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return nil, err
	}
	reader := zqr.NewQRCodeReader()
	res, err := reader.Decode(bmp, map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_PURE_BARCODE: true})
	if err != nil {
		res, err = reader.Decode(bmp, map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_TRY_HARDER: true})
	}
	if err != nil {
		return nil, fmt.Errorf("bailiff: no share QR found in the image: %v", err)
	}
	// The card is ASCII (QR alphanumeric characters and line feeds), so
	// the decoded text is exact; ParseCard checks it.
	text := []byte(res.GetText() + "\n")
	if _, err := shamir.ParseCard(string(text)); err != nil {
		clear(text)
		return nil, err
	}
	return text, nil
}
