// Command kube-apiserver is Kubernetes' own kube-apiserver (k8s.io/kubernetes/cmd/kube-apiserver at the version
// pinned in ../go.mod), built from the module proxy for the tests in tests/test_k8s_apiserver.py. The body is
// upstream's cmd/kube-apiserver/apiserver.go: a main package cannot be imported, so it is repeated here.
package main

import (
	"os"
	_ "time/tzdata" // for timeZone support in CronJob

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
