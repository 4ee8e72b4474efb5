package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/drovernet/drover/testenv"
)

func cmdLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := testenv.LabOptions{}
	fs.IntVar(&opts.Hosts, "hosts", 3, "number of hosts")
	fs.IntVar(&opts.Containers, "containers", 2, "containers per host")
	fs.StringVar(&opts.Encapsulation, "encapsulation", "esp", "esp or vxlan")
	fs.StringVar(&opts.Cipher, "cipher", "aes-128-gcm", "ESP cipher: aes-128-gcm, aes-256-gcm, chacha20-poly1305")
	fs.BoolVar(&opts.Cluster, "cluster", false, "cluster mode: routers get only a cluster key and a seed, and claim their blocks by gossip")
	fs.StringVar(&opts.ClusterOptions.Timing, "timing", "", "with --cluster: the cluster.timing profile, fast (default), lan or edge")
	verbose := fs.Bool("v", false, "log the lab's steps")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2, err: err}
	}
	if fs.NArg() > 0 {
		return usageErr("lab: unexpected argument %q", fs.Arg(0))
	}
	if opts.Hosts < 2 || opts.Hosts > 200 {
		return usageErr("lab: --hosts %d: want 2..200", opts.Hosts)
	}
	if opts.Containers < 1 || opts.Containers > 200 {
		return usageErr("lab: --containers %d: want 1..200", opts.Containers)
	}
	if opts.ClusterOptions.Timing != "" && !opts.Cluster {
		return usageErr("lab: --timing needs --cluster")
	}
	if opts.Encapsulation != "esp" && opts.Encapsulation != "vxlan" {
		return usageErr("lab: --encapsulation %q: want esp or vxlan", opts.Encapsulation)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("lab: needs root (network namespaces): sudo drover lab")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	opts.Bin = exe
	lvl := slog.LevelWarn
	if *verbose {
		lvl = slog.LevelInfo
	}
	opts.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	return testenv.RunLab(ctx, opts, stdout)
}
