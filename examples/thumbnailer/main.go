// Command thumbnailer is a Hot Topic function in Go (standard library only):
// each event is an uploaded image (PNG, JPEG or GIF) and the function makes a
// 128-pixel-wide thumbnail of it. An event that is not an image is taken as
// the seed of a generated 1024×768 picture, so a load test with
// `hottopic publish images.uploaded x --count 500` does real resizing work.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	_ "image/gif"
	_ "image/jpeg"
	"image/png"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const thumbWidth = 128

func main() {
	log.SetFlags(0)
	log.SetOutput(os.Stdout) // stdout is what CF shows as OUT
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	srv := &http.Server{Addr: ":" + port, Handler: http.HandlerFunc(handle)}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	log.Printf("thumbnailer listening on port %s", port)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

func handle(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an image", http.StatusMethodNotAllowed)
		return
	}
	start := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	src, format, err := image.Decode(bytes.NewReader(body))
	if err != nil {
		src, format = generate(body, 1024, 768), "generated"
	}
	thumb := resize(src, thumbWidth)
	var out bytes.Buffer
	if err := png.Encode(&out, thumb); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	sb, tb := src.Bounds(), thumb.Bounds()
	log.Printf("event %s: %s %dx%d → %dx%d thumbnail (%.1f KB png) in %s",
		r.Header.Get("ce-id"), format, sb.Dx(), sb.Dy(), tb.Dx(), tb.Dy(),
		float64(out.Len())/1024, time.Since(start).Round(time.Millisecond))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"event": r.Header.Get("ce-id"), "source": fmt.Sprintf("%dx%d %s", sb.Dx(), sb.Dy(), format),
		"thumbnail": fmt.Sprintf("%dx%d", tb.Dx(), tb.Dy()), "png_bytes": out.Len(),
	})
}

// resize scales img to width pixels wide with a box filter: every thumbnail
// pixel is the average of the source pixels it covers.
func resize(img image.Image, width int) *image.RGBA {
	b := img.Bounds()
	if b.Dx() < width {
		width = b.Dx()
	}
	height := max(1, b.Dy()*width/b.Dx())
	dst := image.NewRGBA(image.Rect(0, 0, width, height))
	for y := 0; y < height; y++ {
		y0, y1 := b.Min.Y+y*b.Dy()/height, b.Min.Y+(y+1)*b.Dy()/height
		for x := 0; x < width; x++ {
			x0, x1 := b.Min.X+x*b.Dx()/width, b.Min.X+(x+1)*b.Dx()/width
			var r, g, bl, a, n uint64
			for sy := y0; sy < y1; sy++ {
				for sx := x0; sx < x1; sx++ {
					cr, cg, cb, ca := img.At(sx, sy).RGBA()
					r, g, bl, a, n = r+uint64(cr), g+uint64(cg), bl+uint64(cb), a+uint64(ca), n+1
				}
			}
			dst.Set(x, y, color.RGBA64{uint16(r / n), uint16(g / n), uint16(bl / n), uint16(a / n)})
		}
	}
	return dst
}

// generate paints a w×h picture whose colours depend on seed.
func generate(seed []byte, w, h int) image.Image {
	f := fnv.New32a()
	f.Write(seed)
	s := f.Sum32()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			s = s*1664525 + 1013904223 // a little noise over the gradient
			img.Set(x, y, color.RGBA{uint8(x*255/w) ^ uint8(s>>24&15), uint8(y * 255 / h), uint8(s >> 16), 255})
		}
	}
	return img
}
