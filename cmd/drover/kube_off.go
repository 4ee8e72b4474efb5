//go:build nokube

package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/drovernet/drover/agent"
	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/policy/engine"
)

// A build with -tags nokube leaves client-go out (about 8 MB of a stripped
// amd64 binary, for edge boards that never run Kubernetes).

const withKube = false

type kubeStore struct{}

func (k *kubeStore) stop()                                              {}
func (k *kubeStore) ready() bool                                        { return false }
func (k *kubeStore) keepNetworkAvailable(context.Context, *agent.Agent) {}

func startKube(context.Context, *config.Config, agent.Config, agent.Router, tunKernel, *agent.Pins, *bgpSpeaker, *slog.Logger) (*cluster, error) {
	return nil, errors.New("cluster.datastore kubernetes: this drover was built without Kubernetes support (-tags nokube)")
}

func startKubePolicy(*config.Config, *engine.Engine, *slog.Logger) (func(context.Context), error) {
	return nil, errors.New("policy.kubernetes: this drover was built without Kubernetes support (-tags nokube)")
}
