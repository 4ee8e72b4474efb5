package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/drovernet/drover/cni/install"
)

// cmdInstallCNI is `drover install-cni`: the Kubernetes init container's
// step (package cni/install does the work).
func cmdInstallCNI(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("install-cni", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conflist := fs.String("conflist", "", "the network configuration list to install (required; checked first)")
	binDir := fs.String("bin-dir", install.DefaultBinDir, "the host's CNI binary directory, as mounted: drover is copied there as \"drover\"")
	confDir := fs.String("conf-dir", install.DefaultConfDir, "the host's CNI config directory, as mounted")
	name := fs.String("name", install.DefaultName, "the conflist's file name in --conf-dir")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: drover install-cni --conflist FILE [--bin-dir DIR] [--conf-dir DIR] [--name NAME]

Copies this drover binary to --bin-dir/drover and FILE to --conf-dir/NAME, each
atomically (temporary file, fsync, rename) and only if it differs. The
conflist is checked first with the plugin's own parser, and every plugin it
chains must be in --bin-dir; otherwise nothing is written. Re-running is a
no-op. See docs/cni.md.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2, err: err}
	}
	if fs.NArg() > 0 {
		return usageErr("install-cni: unexpected argument %q", fs.Arg(0))
	}
	if *conflist == "" {
		return usageErr("install-cni: --conflist FILE is required")
	}
	data, err := os.ReadFile(*conflist)
	if err != nil {
		return usageErr("install-cni: --conflist: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("install-cni: this binary's path: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "install-cni")
	_, err = install.Install(install.Options{
		Binary: self, Conflist: data, BinDir: *binDir, ConfDir: *confDir, Name: *name, Log: log,
	})
	if err != nil {
		// Every refusal is about what was asked (flags, the conflist,
		// the mounts): usage, status 2. Write failures are runtime ones.
		if errors.Is(err, install.ErrWrite) {
			return fmt.Errorf("install-cni: %w", err)
		}
		return &exitError{code: 2, err: fmt.Errorf("install-cni: %w", err)}
	}
	return nil
}
