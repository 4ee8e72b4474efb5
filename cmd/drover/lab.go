package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/drovernet/drover/lab"
	"github.com/drovernet/drover/lab/topology"
)

func cmdLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := lab.Options{}
	fs.IntVar(&opts.Hosts, "hosts", 3, "number of hosts")
	fs.IntVar(&opts.Containers, "containers", 2, "containers per host")
	fs.StringVar(&opts.Encapsulation, "encapsulation", "esp", "esp or vxlan")
	fs.StringVar(&opts.Cipher, "cipher", "aes-128-gcm", "ESP cipher: aes-128-gcm, aes-256-gcm, chacha20-poly1305")
	fs.BoolVar(&opts.Cluster, "cluster", false, "cluster mode: routers get only a cluster key and a seed, and claim their blocks by gossip")
	fs.StringVar(&opts.ClusterOptions.Timing, "timing", "", fmt.Sprintf("cluster mode: the cluster.timing profile, fast, lan or edge (default: fast up to %d hosts, edge above)", lab.FastTimingHosts))
	fs.IntVar(&opts.Sample, "sample", 0, fmt.Sprintf("probe from each container the next one and this many others at random, not every pair (default: every pair up to %d containers, %d above)", lab.FullMatrixContainers, lab.DefaultSample))
	fs.DurationVar(&opts.Idle, "idle", 0, "cluster mode: then leave the cluster idle this long and report per-host gossip bytes/s, CPU, RSS and \"member dead\" lines (any fails the lab)")
	fs.BoolVar(&opts.ClusterOptions.StartAtOnce, "at-once", false, "cluster mode: start every router at the same instant (default: host 1 first, then the others)")
	fs.DurationVar(&opts.ClusterOptions.ConvergeTimeout, "converge-timeout", 0, "cluster mode: how long to wait for every router to see every other one (default 30s)")
	fs.StringVar(&opts.Dir, "dir", "", "keep the routers' configs, logs and state in this directory (default: a temporary one, removed)")
	verbose := fs.Bool("v", false, "log the lab's steps")
	topo := lab.TopologyOptions{ArchBin: map[string]string{}}
	fs.StringVar(&topo.File, "topology", "", "realize this containerlab topology (.clab.yml) in namespaces instead, drover in place of the drover image, and check reachability between nodes labelled drover.lab/probe (docs/lab.md)")
	binARM64 := fs.String("bin-arm64", "", "--topology: the arm64 drover for nodes labelled drover.lab/arch: arm64 (run under qemu-user)")
	binARM := fs.String("bin-arm", "", "--topology: the arm drover for nodes labelled drover.lab/arch: arm (run under qemu-user)")
	fs.DurationVar(&topo.Timeout, "timeout", 0, "--topology: how long to wait for full reachability (default 60s)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2, err: err}
	}
	if fs.NArg() > 0 {
		return usageErr("lab: unexpected argument %q", fs.Arg(0))
	}
	if topo.File != "" {
		var conflict string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "topology", "bin-arm64", "bin-arm", "timeout", "dir", "v":
			default:
				conflict = f.Name
			}
		})
		if conflict != "" {
			return usageErr("lab: --%s does not apply to --topology (the file says what to build)", conflict)
		}
	} else if *binARM64 != "" || *binARM != "" || topo.Timeout != 0 {
		return usageErr("lab: --bin-arm64, --bin-arm and --timeout need --topology")
	}
	if topo.Timeout < 0 {
		return usageErr("lab: --timeout %v: want a positive duration", topo.Timeout)
	}
	if topo.File != "" {
		// A file that cannot be realized is reported before anything
		// else, root or not.
		if _, err := topology.Load(topo.File); err != nil {
			return &exitError{code: 2, err: err}
		}
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
	if opts.Idle < 0 || (opts.Idle > 0 && !opts.Cluster) {
		return usageErr("lab: --idle %v: needs --cluster and a positive duration", opts.Idle)
	}
	if opts.Sample < 0 {
		return usageErr("lab: --sample %d: want 0 or more", opts.Sample)
	}
	if opts.Encapsulation != "esp" && opts.Encapsulation != "vxlan" {
		return usageErr("lab: --encapsulation %q: want esp or vxlan", opts.Encapsulation)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("lab: needs root (network namespaces): sudo drover lab")
	}
	if opts.Dir != "" {
		if err := emptyDir(opts.Dir); err != nil {
			return usageErr("lab: --dir: %v", err)
		}
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
	if topo.File != "" {
		topo.Bin, topo.Dir, topo.Log = exe, opts.Dir, opts.Log
		if *binARM64 != "" {
			topo.ArchBin["arm64"] = *binARM64
		}
		if *binARM != "" {
			topo.ArchBin["arm"] = *binARM
		}
		err := lab.RunTopology(ctx, topo, stdout)
		if te := (*topology.Error)(nil); errors.As(err, &te) {
			return &exitError{code: 2, err: err} // the file is wrong, not the machine
		}
		return err
	}
	return lab.Run(ctx, opts, stdout)
}

// emptyDir creates dir, or checks that it is empty: state left by an
// earlier lab (remembered members, block claims) would change this one.
func emptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}
