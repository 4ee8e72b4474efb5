package tuntest

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/drovernet/drover/tun"
)

func TestFramesRead(t *testing.T) {
	d := NewFrames()
	if got, want := d.Offloads(), (tun.Offloads{TSO: true, USO: true}); got != want {
		t.Errorf("Offloads: got %+v, want %+v", got, want)
	}
	d.Offload.USO = false
	if got := d.Offloads(); got.USO {
		t.Errorf("Offloads after clearing USO: got %+v", got)
	}
	frame := append(make([]byte, tun.VirtioHdrLen), "packet"...)
	d.Inbound <- frame
	buf := make([]byte, tun.MaxFrame)
	n, err := d.ReadFrame(buf)
	if err != nil || !bytes.Equal(buf[:n], frame) {
		t.Errorf("ReadFrame: got %x, %v; want %x, nil", buf[:n], err, frame)
	}

	d.Inbound <- make([]byte, 101)
	d.Inbound <- frame
	if n, err := d.ReadFrame(buf[:100]); n != 0 || !errors.Is(err, tun.ErrFrameTooLarge) {
		t.Errorf("ReadFrame of 101 bytes into 100: got %d, %v; want 0, ErrFrameTooLarge", n, err)
	}
	// Dropped, like the kernel does: the next read gets the next frame.
	if n, err := d.ReadFrame(buf); err != nil || !bytes.Equal(buf[:n], frame) {
		t.Errorf("ReadFrame after a too-large frame: got %x, %v; want %x, nil", buf[:n], err, frame)
	}
}

func TestFramesWrite(t *testing.T) {
	d := NewFrames()
	hdr, a, b := make([]byte, tun.VirtioHdrLen), []byte("ab"), []byte("cd")
	if err := d.WriteFrame([][]byte{hdr, a, nil, b}); err != nil {
		t.Fatalf("WriteFrame: %v", err)
	}
	a[0] = 'X' // the written frame is a copy
	got := <-d.Outbound
	if want := append(make([]byte, tun.VirtioHdrLen), "abcd"...); !bytes.Equal(got, want) {
		t.Errorf("Outbound: got %x, want %x", got, want)
	}
	if err := d.WriteFrame(make([][]byte, tun.MaxParts+1)); err != tun.ErrTooManyParts {
		t.Errorf("WriteFrame of %d parts: got %v, want ErrTooManyParts", tun.MaxParts+1, err)
	}

	// Concurrent writers each get their frame through whole.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if err := d.WriteFrame([][]byte{{byte(i)}, {byte(i)}}); err != nil {
				t.Errorf("WriteFrame: %v", err)
			}
		})
	}
	wg.Wait()
	for range 8 {
		if f := <-d.Outbound; len(f) != 2 || f[0] != f[1] {
			t.Errorf("concurrent frame: got %x, want two equal bytes", f)
		}
	}
}

func TestFramesClose(t *testing.T) {
	d := NewFrames()
	errc := make(chan error, 1)
	go func() {
		_, err := d.ReadFrame(make([]byte, tun.MaxFrame))
		errc <- err
	}()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if err != os.ErrClosed {
			t.Errorf("blocked ReadFrame after Close: got %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrame still blocked 5s after Close")
	}
	d.Inbound <- make([]byte, tun.VirtioHdrLen)
	if _, err := d.ReadFrame(make([]byte, tun.MaxFrame)); err != os.ErrClosed {
		t.Errorf("ReadFrame after Close, frame queued: got %v, want os.ErrClosed", err)
	}
	if err := d.WriteFrame([][]byte{make([]byte, tun.VirtioHdrLen)}); err != os.ErrClosed {
		t.Errorf("WriteFrame after Close: got %v, want os.ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
}
