package kernelpeer

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"
)

func TestZZDebugTCP(t *testing.T) {
	if os.Getenv("DRV_DEBUG") == "" {
		t.Skip()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rtt, err := Ping(ctx, InNetNS("drv-dbgA"), netip.MustParseAddr("10.42.2.1"), 2, 0)
	t.Log(rtt, err)
	x, err := TransferTCP(ctx, InNetNS("drv-dbgA"), InNetNS("drv-dbx-k"), netip.MustParseAddr("10.42.2.1"), 1<<20)
	t.Log(x, err)
	x, err = TransferTCP(ctx, InNetNS("drv-dbx-k"), InNetNS("drv-dbgA"), netip.MustParseAddr("10.42.1.1"), 1<<20)
	t.Log(x, err)
}
