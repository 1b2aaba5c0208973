package qr

import (
	"errors"
	"fmt"
	"image"
	"image/color"

	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"
)

// ErrNoCode reports an image in which no QR code could be read.
var ErrNoCode = errors.New("qr: no QR code found")

// DecodeLuma reads the QR code in a luminance (Y) plane of w×h pixels whose
// rows start stride bytes apart. It returns the code's text only when it is
// alphanumeric (what our frames are): gozxing's text is exact for
// alphanumeric and numeric segments, unlike byte segments. It tries the fast
// path first, then PURE_BARCODE (a clean rendered frame), then TRY_HARDER.
func DecodeLuma(y []byte, w, h, stride int) ([]string, error) {
	if w <= 0 || h <= 0 || stride < w || w*h > MaxImagePixels {
		return nil, fmt.Errorf("qr: luminance plane %dx%d (stride %d) out of range", w, h, stride)
	}
	if len(y) < stride*(h-1)+w {
		return nil, fmt.Errorf("qr: luminance plane of %d bytes is too short for %dx%d (stride %d)", len(y), w, h, stride)
	}
	// gozxing's planar source indexes rows as y*dataWidth: give it the
	// stride as the data width and crop to w.
	src, err := gozxing.NewPlanarYUVLuminanceSource(y, stride, (len(y)-w)/stride+1, 0, 0, w, h, false)
	if err != nil {
		return nil, fmt.Errorf("qr: luminance plane: %w", err)
	}
	return decodeSource(src)
}

var (
	hintsPure   = map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_PURE_BARCODE: true}
	hintsHarder = map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_TRY_HARDER: true}
)

func decodeSource(src gozxing.LuminanceSource) (out []string, err error) {
	defer func() {
		// gozxing is third-party code fed hostile pixels: never let a
		// bug there take the daemon down.
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("%w: decoder failure: %v", ErrNoCode, r)
		}
	}()
	reader := zxqr.NewQRCodeReader()
	var last error
	for _, hints := range []map[gozxing.DecodeHintType]interface{}{nil, hintsPure, hintsHarder} {
		bmp, err := gozxing.NewBinaryBitmap(gozxing.NewHybridBinarizer(src))
		if err != nil {
			return nil, fmt.Errorf("qr: binarize: %w", err)
		}
		res, err := reader.Decode(bmp, hints)
		if err != nil {
			last = err
			continue
		}
		text := res.GetText()
		if !IsAlphanumeric(text) {
			return nil, fmt.Errorf("%w: the code in view holds non-alphanumeric data, not a coffre frame", ErrNotFrame)
		}
		return []string{text}, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrNoCode, last)
}

// DecodeImage reads the QR code in img. Gray and YCbCr images are read in
// place; RGBA, NRGBA and paletted images are converted to gray with integer
// arithmetic; other types go through color.GrayModel.
func DecodeImage(img image.Image) ([]string, error) {
	y, w, h, stride, err := Luma(img)
	if err != nil {
		return nil, err
	}
	return DecodeLuma(y, w, h, stride)
}

// Luma returns the luminance plane of img (BT.601 weights, as JPEG's Y).
func Luma(img image.Image) (y []byte, w, h, stride int, err error) {
	b := img.Bounds()
	w, h = b.Dx(), b.Dy()
	if w <= 0 || h <= 0 || w*h > MaxImagePixels {
		return nil, 0, 0, 0, fmt.Errorf("qr: image %dx%d out of range", w, h)
	}
	switch m := img.(type) {
	case *image.Gray:
		off := m.PixOffset(b.Min.X, b.Min.Y)
		return m.Pix[off:], w, h, m.Stride, nil
	case *image.YCbCr:
		off := m.YOffset(b.Min.X, b.Min.Y)
		return m.Y[off:], w, h, m.YStride, nil
	}
	y = make([]byte, w*h)
	switch m := img.(type) {
	case *image.RGBA:
		rgbToY(y, m.Pix, m.Stride, m.PixOffset(b.Min.X, b.Min.Y), w, h)
	case *image.NRGBA:
		// Fully transparent pixels count as their color; QR frames are
		// opaque.
		rgbToY(y, m.Pix, m.Stride, m.PixOffset(b.Min.X, b.Min.Y), w, h)
	case *image.Paletted:
		var lut [256]byte
		for i, c := range m.Palette {
			lut[i] = color.GrayModel.Convert(c).(color.Gray).Y
		}
		for r := 0; r < h; r++ {
			row := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+r):]
			for x := 0; x < w; x++ {
				y[r*w+x] = lut[row[x]]
			}
		}
	default:
		for r := 0; r < h; r++ {
			for x := 0; x < w; x++ {
				y[r*w+x] = color.GrayModel.Convert(img.At(b.Min.X+x, b.Min.Y+r)).(color.Gray).Y
			}
		}
	}
	return y, w, h, w, nil
}

func rgbToY(dst, pix []byte, stride, off, w, h int) {
	for r := 0; r < h; r++ {
		row := pix[off+r*stride : off+r*stride+4*w]
		for x := 0; x < w; x++ {
			p := row[4*x : 4*x+3 : 4*x+3]
			dst[r*w+x] = byte((19595*uint32(p[0]) + 38470*uint32(p[1]) + 7471*uint32(p[2]) + 1<<15) >> 16)
		}
	}
}
