// SPDX-License-Identifier: Apache-2.0

// Loading: files are split into YAML documents, each document's apiVersion
// and kind pick the Go type of the Kubernetes API it must decode into, and
// the document is decoded with sigs.k8s.io/yaml's UnmarshalStrict, which
// rejects unknown fields and duplicate keys.  A kind without a type here is
// a problem too: nothing is let through undecoded.

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// The largest manifest file read; ours are a few KiB.
const maxManifestBytes = 4 << 20

// The API types a manifest may decode into, by "apiVersion/kind".
var apiTypes = map[string]func() any{
	"v1/Namespace":             func() any { return &corev1.Namespace{} },
	"v1/ServiceAccount":        func() any { return &corev1.ServiceAccount{} },
	"v1/Secret":                func() any { return &corev1.Secret{} },
	"v1/ConfigMap":             func() any { return &corev1.ConfigMap{} },
	"v1/ResourceQuota":         func() any { return &corev1.ResourceQuota{} },
	"v1/PersistentVolume":      func() any { return &corev1.PersistentVolume{} },
	"v1/PersistentVolumeClaim": func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Pod":                   func() any { return &corev1.Pod{} },
	"apps/v1/DaemonSet":        func() any { return &appsv1.DaemonSet{} },
	"apps/v1/Deployment":       func() any { return &appsv1.Deployment{} },
	"batch/v1/Job":             func() any { return &batchv1.Job{} },

	"storage.k8s.io/v1/CSIDriver":    func() any { return &storagev1.CSIDriver{} },
	"storage.k8s.io/v1/StorageClass": func() any { return &storagev1.StorageClass{} },

	"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
	"rbac.authorization.k8s.io/v1/Role":               func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding":        func() any { return &rbacv1.RoleBinding{} },
}

// The part of a kustomization.yaml that this tool understands; strict
// decoding makes any other field a problem rather than something ignored.
type kustomization struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Namespace  string            `json:"namespace,omitempty"`
	Resources  []string          `json:"resources"`
	Labels     []kustomizeLabels `json:"labels,omitempty"`
	Images     []imageOverride   `json:"images,omitempty"`
}

type kustomizeLabels struct {
	Pairs            map[string]string `json:"pairs"`
	IncludeSelectors bool              `json:"includeSelectors,omitempty"`
	IncludeTemplates bool              `json:"includeTemplates,omitempty"`
}

type imageOverride struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// What applies to the objects of one kustomization directory.
type dirContext struct {
	namespace string
	images    map[string]imageOverride
}

// One decoded document.
type object struct {
	where string // "FILE" or "FILE#N" for the N-th document (from 1)
	gvk   string // "apiVersion/kind"
	meta  *metav1.ObjectMeta
	obj   any
	ctx   *dirContext
}

type objectSet struct {
	objects  []*object
	files    int
	problems []string
}

func newObjectSet() *objectSet { return &objectSet{} }

func (s *objectSet) problem(where, format string, args ...any) {
	s.problems = append(s.problems, where+": "+fmt.Sprintf(format, args...))
}

func isManifest(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

func isKustomization(name string) bool {
	return name == "kustomization.yaml" || name == "kustomization.yml" || name == "Kustomization"
}

// loadDir loads every manifest under root; directories with a
// kustomization load through it.
func (s *objectSet) loadDir(root string) {
	dirs := map[string][]string{} // dir -> manifest file names
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		dirs[filepath.Dir(path)] = append(dirs[filepath.Dir(path)], d.Name())
		return nil
	})
	if err != nil {
		s.problem(root, "cannot walk: %v", err)
		return
	}
	var names []string
	for dir := range dirs {
		names = append(names, dir)
	}
	sort.Strings(names)
	for _, dir := range names {
		s.loadOneDir(dir, dirs[dir])
	}
}

func (s *objectSet) loadOneDir(dir string, files []string) {
	sort.Strings(files)
	var kfile string
	for _, f := range files {
		if isKustomization(f) {
			if kfile != "" {
				s.problem(filepath.Join(dir, f), "a second kustomization file in one directory")
			}
			kfile = f
		}
	}
	if kfile == "" {
		for _, f := range files {
			if isManifest(f) {
				s.loadFile(filepath.Join(dir, f), nil)
			}
		}
		return
	}

	kpath := filepath.Join(dir, kfile)
	var k kustomization
	data, err := readCapped(kpath)
	if err == nil {
		err = yaml.UnmarshalStrict(data, &k)
	}
	if err != nil {
		s.problem(kpath, "%v", err)
		return
	}
	s.files++
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		s.problem(kpath, "apiVersion/kind is %q/%q, expected kustomize.config.k8s.io/v1beta1/Kustomization",
			k.APIVersion, k.Kind)
	}
	ctx := &dirContext{namespace: k.Namespace, images: map[string]imageOverride{}}
	for _, im := range k.Images {
		if im.Name == "" {
			s.problem(kpath, "an images: entry without a name")
			continue
		}
		ctx.images[im.Name] = im
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		if strings.Contains(r, "/") || !isManifest(r) {
			s.problem(kpath, "resource %q: only manifest files of this directory are supported", r)
			continue
		}
		if listed[r] {
			s.problem(kpath, "resource %q is listed twice", r)
		}
		listed[r] = true
		s.loadFile(filepath.Join(dir, r), ctx)
	}
	for _, f := range files {
		if isManifest(f) && !isKustomization(f) && !listed[f] {
			s.problem(filepath.Join(dir, f), "not listed in %s: kustomize would leave it out", kfile)
		}
	}
}

func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxManifestBytes)
	}
	return data, nil
}

// loadFile decodes every document of one file; ctx is nil outside a
// kustomization (or for rendered output, where it was already applied).
func (s *objectSet) loadFile(path string, ctx *dirContext) {
	data, err := readCapped(path)
	if err != nil {
		s.problem(path, "%v", err)
		return
	}
	s.files++
	if ctx == nil {
		ctx = &dirContext{images: map[string]imageOverride{}}
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		where := fmt.Sprintf("%s#%d", path, n)
		if err != nil {
			s.problem(where, "%v", err)
			return
		}
		s.decodeDoc(where, doc, ctx)
	}
}

func (s *objectSet) decodeDoc(where string, doc []byte, ctx *dirContext) {
	var probe any
	if err := yaml.Unmarshal(doc, &probe); err != nil {
		s.problem(where, "%v", err)
		return
	}
	if probe == nil {
		return // only comments, or an empty document between two "---"
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		s.problem(where, "%v", err)
		return
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		s.problem(where, "no apiVersion or kind")
		return
	}
	gvk := tm.APIVersion + "/" + tm.Kind
	newObj, ok := apiTypes[gvk]
	if !ok {
		s.problem(where, "%s is not a kind this check knows how to decode", gvk)
		return
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		s.problem(where, "strict decoding as %s: %v", gvk, err)
		return
	}
	meta := objectMeta(obj)
	if meta.Name == "" {
		s.problem(where, "%s without metadata.name", gvk)
	}
	s.objects = append(s.objects, &object{where: where, gvk: gvk, meta: meta, obj: obj, ctx: ctx})
}

func objectMeta(obj any) *metav1.ObjectMeta {
	type hasMeta interface{ GetObjectMeta() metav1.Object }
	if m, ok := obj.(hasMeta); ok {
		if om, ok := m.GetObjectMeta().(*metav1.ObjectMeta); ok {
			return om
		}
	}
	return &metav1.ObjectMeta{}
}

// namespace is where a namespaced object lands once applied.
func (o *object) namespace() string {
	if o.ctx != nil && o.ctx.namespace != "" {
		return o.ctx.namespace
	}
	if o.meta.Namespace != "" {
		return o.meta.Namespace
	}
	return "default"
}
