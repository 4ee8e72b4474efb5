// Command release builds drover's release binaries: static (CGO off),
// stripped, -trimpath, stamped with a version and the commit, for
// linux/amd64, linux/arm64 and linux/arm/v7, in two flavours:
//
//   - drover (edge): everything but the Kubernetes datastore and BGP
//     (-tags nokube,nobgp), at most 12 MiB on amd64 (issue 15);
//   - drover-full: with Kubernetes mode (client-go, about 8 MB more) and
//     BGP (GoBGP, about 12 MB more).
//
// It writes them and SHA256SUMS into -out and prints each size, and, with
// -images (the default), one multi-platform container image per flavour as
// an oci-archive (drover-image.oci.tar, drover-full-image.oci.tar: an OCI
// image index of every platform built, no base image), which `podman load`
// and `ctr images import` read without a registry:
//
//	go run ./tools/release -version v0.9.0 -out dist
//
// It fails when the amd64 edge binary is over -max (bytes), so a
// dependency that grows the edge build is noticed where it is added.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/drovernet/drover/tools/release/build"
)

func main() {
	out := flag.String("out", "dist", "directory for the binaries and SHA256SUMS")
	version := flag.String("version", "", "version to stamp (default: git describe --tags --always --dirty)")
	platforms := flag.String("platforms", strings.Join(build.Platforms, ","), "comma-separated GOOS/GOARCH[/vARM] list")
	flavours := flag.String("flavours", "edge,full", "edge, full or both")
	maxSize := flag.Int64("max", build.EdgeMaxAMD64, "fail when the linux/amd64 edge binary is larger (bytes)")
	images := flag.Bool("images", true, "also write each flavour's multi-platform image as an oci-archive")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "release: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	if err := run(*out, *version, *platforms, *flavours, *maxSize, *images); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(out, version, platforms, flavours string, maxSize int64, images bool) error {
	root, err := build.ModuleRoot()
	if err != nil {
		return err
	}
	if version == "" {
		version = build.GitVersion(root)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var arts []build.Artifact
	byFlavour := map[build.Flavour][]build.Artifact{}
	var order []build.Flavour
	for _, p := range strings.Split(platforms, ",") {
		plat, err := build.ParsePlatform(p)
		if err != nil {
			return err
		}
		for _, f := range strings.Split(flavours, ",") {
			fl, err := build.ParseFlavour(f)
			if err != nil {
				return err
			}
			a, err := build.Build(root, out, build.Target{Platform: plat, Flavour: fl, Version: version})
			if err != nil {
				return err
			}
			fmt.Printf("%-32s %9d bytes  %6.2f MiB\n", filepath.Base(a.Path), a.Size, float64(a.Size)/(1<<20))
			if plat.Arch == "amd64" && fl == build.Edge && a.Size > maxSize {
				return fmt.Errorf("%s is %d bytes, over the %d-byte limit for the amd64 edge build", a.Path, a.Size, maxSize)
			}
			arts = append(arts, a)
			if _, ok := byFlavour[fl]; !ok {
				order = append(order, fl)
			}
			byFlavour[fl] = append(byFlavour[fl], a)
		}
	}
	if images {
		for _, fl := range order {
			path := filepath.Join(out, build.ImageArchiveName(fl))
			ref := build.ImageRef(fl, version)
			if err := build.WriteImage(path, ref, root, byFlavour[fl]); err != nil {
				return err
			}
			fi, err := os.Stat(path)
			if err != nil {
				return err
			}
			fmt.Printf("%-32s %9d bytes  %6.2f MiB  %s, %d platforms\n", filepath.Base(path), fi.Size(), float64(fi.Size())/(1<<20), ref, len(byFlavour[fl]))
			a, err := build.Sum(path)
			if err != nil {
				return err
			}
			arts = append(arts, a)
		}
	}
	return build.WriteSums(filepath.Join(out, "SHA256SUMS"), arts)
}
