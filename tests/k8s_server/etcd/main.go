// Command etcd is the etcd server (go.etcd.io/etcd/server/v3 at the version pinned in ../go.mod), the storage
// behind the kube-apiserver of tests/test_k8s_apiserver.py. Upstream's server/main.go does the same.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
