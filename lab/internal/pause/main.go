// Command pause is the pod sandbox's process in the kube tests' pause image
// (registry.k8s.io/pause:3.10, built by mkimages without a registry): it
// holds the pod's namespaces and does nothing until SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
