// Command drover is the drover overlay router: the daemon (`drover run`), its
// command-line views (`drover status`), and the namespace lab (`drover lab`).
//
// Exit status: 0 success, 1 runtime failure, 2 bad configuration or usage.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/cni"
)

const usage = `drover: a userspace overlay router for container networks

Usage:
  drover run --config FILE         run the router daemon (see docs/config.md)
  drover run --check --config FILE check the file (and the cluster key) and exit
  drover status [-o json]          show the running daemon's counters and drops
  drover peers [-o json]           cluster members, blocks, SAs with age and counters
  drover routes [-o json]          routes the daemon installed through its TUN
  drover forget NODE               unpin NODE's identity key (a reinstalled host)
  drover policy list               network policies this host enforces (docs/policy.md)
  drover policy explain FROM TO [PORT[/PROTO]]
                                   would FROM reach TO, and by which policy and rule
  drover keygen                    print a new cluster key (for cluster.key_file)
  drover install-cni --conflist F  install this binary and a conflist for the node's
                                   container runtime (Kubernetes init container; docs/cni.md)
  drover lab [flags]               build a namespace lab, show reachability, tear it down
  drover lab --topology FILE       the same for a containerlab topology (docs/lab.md)
  drover netns-exec NS -- PROG [ARGS...]
                                   run PROG inside network namespace NS (/run/netns/NS);
                                   drover lab starts foreign-architecture hosts with it
  drover version                   print the version, commit, Go version, optional
                                   features and the AES-GCM this machine gets

Run 'drover COMMAND -h' for a command's flags.
`

// exitError carries an exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// cmdKeygen prints a new random 32-byte cluster key in hex.
func cmdKeygen(args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usageErr("keygen: unexpected argument %q", args[0])
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return err
	}
	_, err := fmt.Fprintln(stdout, hex.EncodeToString(k))
	return err
}

// cmdNetnsExec runs PROG inside the named network namespace: drover
// netns-exec NAME -- PROG ARGS... It is how `drover lab` starts a
// foreign-architecture build under qemu-user in a host namespace, and
// what an operator without ip(8) uses the same way.
func cmdNetnsExec(args []string) error {
	if len(args) < 3 || args[1] != "--" {
		return usageErr("netns-exec: usage: drover netns-exec NAME -- PROG [ARGS...]")
	}
	return execInNetns(args[0], args[2], args[3:])
}

// signalContext is cancelled by SIGINT or SIGTERM. Commands install it
// themselves, after anything that replaces the process (run --netns), so a
// signal is never caught by an image that is about to be replaced.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func main() {
	// Installed as /opt/cni/bin/drover, the binary is the CNI plugin: the
	// runtime sets CNI_COMMAND (CNI spec 1.1 §"Parameters").
	if os.Getenv("CNI_COMMAND") != "" {
		cni.Main(version) // exits
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stderr)
	case "status":
		err = cmdStatus(args[1:], stdout)
	case "peers":
		err = cmdPeers(args[1:], stdout)
	case "routes":
		err = cmdRoutes(args[1:], stdout)
	case "forget":
		err = cmdForget(args[1:], stdout)
	case "policy":
		err = cmdPolicy(args[1:], stdout)
	case "keygen":
		err = cmdKeygen(args[1:], stdout)
	case "install-cni":
		err = cmdInstallCNI(args[1:], stderr)
	case "netns-exec":
		err = cmdNetnsExec(args[1:])
	case "lab":
		ctx, stop := signalContext()
		defer stop()
		err = cmdLab(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		if len(args) > 1 {
			err = usageErr("version: unexpected argument %q", args[1])
			break
		}
		err = readBuildInfo().write(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "drover: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "drover: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, config.ErrInvalid) {
		return 2
	}
	return 1
}
