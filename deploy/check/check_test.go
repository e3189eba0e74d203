// SPDX-License-Identifier: Apache-2.0

// Tests: the real manifests pass, and each mutation of them that breaks an
// invariant (or strictness) is caught with the expected message.  The
// mutations edit the real files' text in a copy, so the tests follow the
// manifests as they change; a mutation whose text is no longer found fails
// the test instead of silently testing nothing.

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const manifestRoot = "../kubernetes"

// copyTree copies the manifests into a temporary directory.
func copyTree(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(manifestRoot, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(manifestRoot, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func runCheck(root string) []string {
	s := newObjectSet()
	s.loadDir(filepath.Join(root, "base"))
	s.loadDir(filepath.Join(root, "examples"))
	return s.check()
}

func TestRealManifestsPass(t *testing.T) {
	if problems := runCheck(manifestRoot); len(problems) != 0 {
		t.Fatalf("problems in the real manifests:\n%s", strings.Join(problems, "\n"))
	}
}

type mutation struct {
	name     string
	file     string // relative to deploy/kubernetes
	old, new string // replaced once; old must occur
	want     string // a substring of one reported problem
}

var mutations = []mutation{
	// Strict decoding.
	{"unknown field", "base/daemonset.yaml",
		"mountPropagation: Bidirectional", "mountPropogation: Bidirectional", `unknown field`},
	{"duplicate key", "base/csidriver.yaml",
		"  podInfoOnMount: true\n", "  podInfoOnMount: true\n  podInfoOnMount: false\n", `duplicate`},
	{"wrong type", "base/csidriver.yaml",
		"  attachRequired: false", "  attachRequired: \"no\"", `strict decoding`},
	{"unknown kind", "examples/s3-secret.yaml",
		"kind: Secret\nmetadata:\n  name: cairn-s3-credentials", "kind: Sekret\nmetadata:\n  name: cairn-s3-credentials",
		`v1/Sekret is not a kind`},
	{"unknown kustomization field", "base/kustomization.yaml",
		"resources:", "resourcez:", `unknown field "resourcez"`},
	{"file missing from kustomization", "base/kustomization.yaml",
		"  - serviceaccount.yaml\n", "", `not listed in kustomization.yaml`},

	// Propagation and privileges.
	{"bidirectional without privileged", "base/daemonset.yaml",
		"            # Mounting (FUSE and bind mounts) and Bidirectional mount\n" +
			"            # propagation both require a privileged container.\n" +
			"            privileged: true",
		"            privileged: false",
		`Bidirectional mount propagation of "/var/lib/kubelet" in a container that is not privileged`},
	{"kubelet dir not bidirectional", "base/daemonset.yaml",
		"              mountPropagation: Bidirectional", "              mountPropagation: HostToContainer",
		`must be mounted with mountPropagation: Bidirectional`},

	// Images.
	{"latest tag", "base/daemonset.yaml",
		"livenessprobe:v2.20.0", "livenessprobe:latest", `moving tag 'latest'`},
	{"missing tag", "base/daemonset.yaml",
		"csi-node-driver-registrar:v2.18.0", "csi-node-driver-registrar", `is not pinned`},
	{"kustomize override without tag", "base/kustomization.yaml",
		"    newTag: 0.1.0\n", "", `is not pinned`},
	{"bad digest", "examples/static-pv.yaml",
		"python:3.12.8-slim-bookworm", "python@sha256:1234", `malformed digest`},

	// CSIDriver.
	{"attach required", "base/csidriver.yaml",
		"  attachRequired: false", "  attachRequired: true", `attachRequired must be set to false`},
	{"pod info", "base/csidriver.yaml",
		"  podInfoOnMount: true", "  podInfoOnMount: false", `podInfoOnMount must be set to true`},
	{"lifecycle modes", "base/csidriver.yaml",
		"    - Ephemeral\n", "", `volumeLifecycleModes`},
	{"fsgroup policy", "base/csidriver.yaml",
		"  fsGroupPolicy: None", "  fsGroupPolicy: File", `fsGroupPolicy must be None`},

	// The plugin DaemonSet.
	{"priority", "base/daemonset.yaml",
		"priorityClassName: system-node-critical", "priorityClassName: system-cluster-critical",
		`expected system-node-critical`},
	{"host network", "base/daemonset.yaml",
		"hostNetwork: false", "hostNetwork: true", `hostNetwork is true`},
	{"no registrar", "base/daemonset.yaml",
		"registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.18.0", "registry.example.com/other:v1",
		`no node-driver-registrar sidecar`},
	{"no livenessprobe", "base/daemonset.yaml",
		"registry.k8s.io/sig-storage/livenessprobe:v2.20.0", "registry.example.com/other:v1",
		`no livenessprobe sidecar`},
	{"registration path", "base/daemonset.yaml",
		"--kubelet-registration-path=/var/lib/kubelet/plugins/cairn.csi.dev/csi.sock",
		"--kubelet-registration-path=/var/lib/kubelet/plugins/other/csi.sock",
		`--kubelet-registration-path=/var/lib/kubelet/plugins/other/csi.sock, but the plugin's socket`},
	{"liveness port", "base/daemonset.yaml",
		"--health-port=9808", "--health-port=9999", `the livenessprobe sidecar listens on 9999`},
	{"no fuse", "base/daemonset.yaml",
		"            path: /dev/fuse\n            type: CharDevice", "            path: /dev/fuse\n            type: File",
		`must mount the node's /dev/fuse`},
	{"cache path differs", "base/daemonset.yaml",
		"            - name: cache-dir\n              mountPath: /var/cache/cairn",
		"            - name: cache-dir\n              mountPath: /cache",
		`--cache-dir=/var/cache/cairn is not on a hostPath volume`},
	{"no resources", "base/daemonset.yaml",
		"              cpu: 5m\n              memory: 16Mi\n            limits:\n              memory: 64Mi\n          volumeMounts:\n            - name: socket-dir\n              mountPath: /csi\n            - name: registration-dir",
		"              memory: 16Mi\n            limits:\n              memory: 64Mi\n          volumeMounts:\n            - name: socket-dir\n              mountPath: /csi\n            - name: registration-dir",
		`container "node-driver-registrar" has no cpu request`},
	{"no hostPID", "base/daemonset.yaml",
		"hostPID: true", "hostPID: false", `mode=host needs hostPID: true`},
	{"bundle from another image", "base/daemonset.yaml",
		"        - name: install-bundle\n          image: cairn", "        - name: install-bundle\n          image: registry.example.com/cairn/cairn:0.0.9",
		`installs the bundle from registry.example.com/cairn/cairn:0.0.9`},
	{"driver name", "base/daemonset.yaml",
		"--driver-name=cairn.csi.dev", "--driver-name=other.csi.dev", `--driver-name=other.csi.dev, but the CSIDriver`},

	// Volumes and examples.
	{"pv read-write", "examples/static-pv.yaml",
		"  accessModes:\n    - ReadOnlyMany\n  persistentVolumeReclaimPolicy",
		"  accessModes:\n    - ReadWriteOnce\n  persistentVolumeReclaimPolicy",
		`access mode ReadWriteOnce`},
	{"pv missing ref", "examples/static-pv.yaml",
		"      ref: llama-3-8b:v1\n", "", `volumeAttributes has no ref`},
	{"pv bad store", "examples/static-pv.yaml",
		"store: s3://models/cairn", "store: ftp://models/cairn", `is not a file:///, http://, https:// or s3:// URL`},
	{"pv store with credentials", "examples/static-pv.yaml",
		"store: s3://models/cairn", "store: https://user:pw@models.example.com/cairn", `has credentials`},
	{"pv unknown attribute", "examples/static-pv.yaml",
		"      region: us-east-1\n", "      regoin: us-east-1\n", `key "regoin" is not one cairn-csi accepts`},
	{"region without s3", "examples/inline-pod.yaml",
		"          store: https://datasets.example.com/cairn\n",
		"          store: https://datasets.example.com/cairn\n          region: eu-west-1\n",
		`region and endpoint are for s3:// stores only`},
	{"pv bad ref", "examples/static-pv.yaml",
		"ref: llama-3-8b:v1", "ref: Llama:v1", `ref "Llama:v1" is not NAME:TAG`},
	{"missing secret", "examples/static-pv.yaml",
		"      name: cairn-s3-credentials\n      namespace: default",
		"      name: nope\n      namespace: default", `names Secret default/nope, which is not in the manifests`},
	{"secret without key", "examples/s3-secret.yaml",
		"  AWS_SECRET_ACCESS_KEY: REPLACE_WITH_SECRET_ACCESS_KEY\n---", "---",
		`has no AWS_SECRET_ACCESS_KEY`},
	{"inline wrong driver", "examples/inline-pod.yaml",
		"driver: cairn.csi.dev", "driver: other.csi.dev", `csi.driver is "other.csi.dev"`},
	{"inline bad digest ref", "examples/inline-pod.yaml",
		"imagenet/val@sha256:0000", "imagenet/val@sha256:zz00", `is not NAME@sha256:<64 hex>`},
	{"warm elsewhere", "examples/warm-daemonset.yaml",
		"            - --cache-dir\n            - /var/cache/cairn", "            - --cache-dir\n            - /tmp/cache",
		`--cache-dir /tmp/cache is not a hostPath mounted at its node path`},
	{"warm secret key", "examples/warm-daemonset.yaml",
		"                  key: AWS_SECRET_ACCESS_KEY", "                  key: AWS_SECRET",
		`has no key AWS_SECRET`},
	{"claim missing", "examples/static-pv.yaml",
		"        claimName: llama-3-8b-v1", "        claimName: other", `claim default/other is not in the manifests`},
}

func TestMutationsAreCaught(t *testing.T) {
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			root := copyTree(t)
			p := filepath.Join(root, m.file)
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), m.old) {
				t.Fatalf("%s no longer contains %q: update this mutation", m.file, m.old)
			}
			mutated := strings.Replace(string(data), m.old, m.new, 1)
			if err := os.WriteFile(p, []byte(mutated), 0o644); err != nil {
				t.Fatal(err)
			}
			problems := runCheck(root)
			for _, pr := range problems {
				if strings.Contains(pr, m.want) {
					t.Logf("caught: %s", pr)
					return
				}
			}
			t.Fatalf("expected a problem containing %q, got:\n%s", m.want, strings.Join(problems, "\n"))
		})
	}
}

func TestParseImage(t *testing.T) {
	cases := map[string]imageRef{
		"cairn":                         {name: "cairn"},
		"cairn:1":                       {name: "cairn", tag: "1"},
		"host:5000/a/b":                 {name: "host:5000/a/b"},
		"host:5000/a/b:v2":              {name: "host:5000/a/b", tag: "v2"},
		"a/b@sha256:00":                 {name: "a/b", digest: "sha256:00"},
		"host:5000/a/b:v2@sha256:ab":    {name: "host:5000/a/b", tag: "v2", digest: "sha256:ab"},
		"registry.k8s.io/x:v2.18.0":     {name: "registry.k8s.io/x", tag: "v2.18.0"},
		"docker.io/library/python:3.12": {name: "docker.io/library/python", tag: "3.12"},
	}
	for in, want := range cases {
		if got := parseImage(in); got != want {
			t.Errorf("parseImage(%q) = %+v, want %+v", in, got, want)
		}
	}
}
