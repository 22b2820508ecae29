// A CNI client doing what containerd's CRI plugin does with go-cni and libcni (Debian
// golang-github-containerd-go-cni-dev 1.1.7, golang-github-appc-cni-dev 1.1.2), for shimnet's
// end-to-end tests (tests/go_clients.rs). Built offline:
//
//	GO111MODULE=off GOPATH=<dir>:/usr/share/gocode go build -o cniclient ./tests/go/cniclient
//
// Usage: cniclient setup|check|remove CONFDIR PLUGINDIRS(colon-separated) ID NETNS
// Each prints one JSON object on stdout; any failure prints the error and exits 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/cni/libcni"
)

// What the CRI plugin passes for a pod sandbox with one published port. (Not
// WithCapabilityIPRanges: go-cni writes it as a flat list of ranges where the CNI convention,
// and host-local's Go types, want a list of range sets, so Go plugins refuse it too.)
var (
	ports  = []gocni.PortMapping{{HostPort: 18690, ContainerPort: 80, Protocol: "tcp", HostIP: ""}}
	labels = map[string]string{
		"IgnoreUnknown":              "1",
		"K8S_POD_NAMESPACE":          "default",
		"K8S_POD_NAME":               "gocni-pod",
		"K8S_POD_INFRA_CONTAINER_ID": "",
		"K8S_POD_UID":                "8a3c0e2e-54f4-4a4f-9d7e-3b1f0f6f0c11",
	}
)

func fail(what string, err error) {
	fmt.Printf("{\"error\": %q}\n", fmt.Sprintf("%s: %v", what, err))
	os.Exit(1)
}

func emit(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("marshal", err)
	}
	fmt.Println(string(b))
}

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: cniclient setup|check|remove CONFDIR PLUGINDIRS ID NETNS")
		os.Exit(2)
	}
	cmd, confDir, pluginDirs, id, netns := os.Args[1], os.Args[2], strings.Split(os.Args[3], ":"), os.Args[4], os.Args[5]
	labels["K8S_POD_INFRA_CONTAINER_ID"] = id
	ctx := context.Background()
	opts := []gocni.NamespaceOpts{
		gocni.WithLabels(labels),
		gocni.WithCapabilityPortMap(ports),
	}
	// As containerd's CRI plugin initialises go-cni: loopback plus the first conflist.
	cni, err := gocni.New(
		gocni.WithMinNetworkCount(2),
		gocni.WithPluginConfDir(confDir),
		gocni.WithPluginDir(pluginDirs),
		gocni.WithInterfacePrefix("eth"),
	)
	if err != nil {
		fail("gocni.New", err)
	}
	if err := cni.Load(gocni.WithLoNetwork, gocni.WithDefaultConf); err != nil {
		fail("Load", err)
	}
	switch cmd {
	case "setup":
		res, err := cni.Setup(ctx, id, netns, opts...)
		if err != nil {
			fail("Setup", err)
		}
		emit(map[string]interface{}{"setup": res})
	case "check":
		// libcni directly: the cached result of the ADD, then CHECK with it as prevResult.
		// (go-cni's own Check also checks its loopback network, whose 0.3.1 config has no
		// CHECK.)
		files, err := libcni.ConfFiles(confDir, []string{".conflist"})
		if err != nil || len(files) == 0 {
			fail("ConfFiles", err)
		}
		list, err := libcni.ConfListFromFile(filepath.Join(files[0]))
		if err != nil {
			fail("ConfListFromFile", err)
		}
		rt := &libcni.RuntimeConf{
			ContainerID:    id,
			NetNS:          netns,
			IfName:         "eth0",
			CapabilityArgs: map[string]interface{}{"portMappings": ports},
		}
		for k, v := range labels {
			rt.Args = append(rt.Args, [2]string{k, v})
		}
		cfg := libcni.NewCNIConfig(pluginDirs, nil)
		cached, err := cfg.GetNetworkListCachedResult(list, rt)
		if err != nil {
			fail("GetNetworkListCachedResult", err)
		}
		if cached == nil {
			fail("GetNetworkListCachedResult", fmt.Errorf("no cached result"))
		}
		if err := cfg.CheckNetworkList(ctx, list, rt); err != nil {
			fail("CheckNetworkList", err)
		}
		emit(map[string]interface{}{"cached": cached, "check": "ok"})
	case "remove":
		// Twice (a retried teardown), then once more without a namespace (the sandbox is gone).
		steps := []string{}
		for i, path := range []string{netns, netns, ""} {
			if err := cni.Remove(ctx, id, path, opts...); err != nil {
				fail(fmt.Sprintf("Remove #%d (netns %q)", i+1, path), err)
			}
			steps = append(steps, fmt.Sprintf("Remove(netns=%q): ok", path))
		}
		emit(map[string]interface{}{"remove": steps})
	default:
		fail("usage", fmt.Errorf("unknown command %q", cmd))
	}
}
