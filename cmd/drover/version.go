package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/drovernet/drover/crypto/aesgcm"
)

// version is set at build time with -ldflags "-X main.version=..." (the
// release tool, tools/release, does); a plain go build says "dev".
var version = "dev"

// buildInfo is what `drover version` prints: enough to tell which binary
// runs on a board and what it can do there.
type buildInfo struct {
	Version  string
	Commit   string // vcs.revision, with "+dirty" when the tree was modified
	Time     string // vcs.time
	Go       string
	Platform string
	Features []string // optional parts linked in (kubernetes, bgp)
	AESGCM   string
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		AESGCM: aesgcm.Implementation(), Commit: "unknown"}
	if runtime.GOARCH == "arm" {
		b.Platform += "/v" + goarm()
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty {
			b.Commit += "+dirty"
		}
	}
	if withKube {
		b.Features = append(b.Features, "kubernetes")
	}
	if withBGP {
		b.Features = append(b.Features, "bgp")
	}
	return b
}

// goarm is the GOARM the binary was built for (debug.BuildInfo's setting).
func goarm() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" {
				return strings.TrimSuffix(strings.TrimSuffix(s.Value, ",softfloat"), ",hardfloat")
			}
		}
	}
	return "?"
}

func (b buildInfo) write(w io.Writer) error {
	features := "none (built with -tags nokube,nobgp)"
	if len(b.Features) > 0 {
		features = strings.Join(b.Features, ", ")
		switch {
		case !withKube:
			features += " (not kubernetes: -tags nokube)"
		case !withBGP:
			features += " (not bgp: -tags nobgp)"
		}
	}
	when := ""
	if b.Time != "" {
		when = " (" + b.Time + ")"
	}
	_, err := fmt.Fprintf(w, "drover %s\ncommit:   %s%s\ngo:       %s %s\nfeatures: %s\naes-gcm:  %s\n",
		b.Version, b.Commit, when, b.Go, b.Platform, features, b.AESGCM)
	return err
}
