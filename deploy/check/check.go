// SPDX-License-Identifier: Apache-2.0

// The invariants.  Each check names the object and, where it helps, the
// container; the messages say what is wrong and what is expected.

package main

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	defaultDriverName = "cairn.csi.dev"
	pluginContainer   = "cairn-csi"
	registrarImage    = "registry.k8s.io/sig-storage/csi-node-driver-registrar"
	livenessImage     = "registry.k8s.io/sig-storage/livenessprobe"
	launchConfigKey   = "cairnfs-launch.conf"
	launchConfigMount = "/etc/cairn"
)

var (
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	tagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	// The grammar of include/cairn/ref.h.
	refNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$`)
	refTagRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
	awsKeys   = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
)

// A pod template (or a pod) and where it came from.
type podSpec struct {
	o    *object
	spec *corev1.PodSpec
}

func (p podSpec) where() string {
	return fmt.Sprintf("%s (%s %s)", p.o.where, kindOf(p.o), p.o.meta.Name)
}

func kindOf(o *object) string { return o.gvk[strings.LastIndex(o.gvk, "/")+1:] }

func (s *objectSet) podSpecs() []podSpec {
	var out []podSpec
	for _, o := range s.objects {
		switch v := o.obj.(type) {
		case *corev1.Pod:
			out = append(out, podSpec{o, &v.Spec})
		case *appsv1.DaemonSet:
			out = append(out, podSpec{o, &v.Spec.Template.Spec})
		case *appsv1.Deployment:
			out = append(out, podSpec{o, &v.Spec.Template.Spec})
		case *batchv1.Job:
			out = append(out, podSpec{o, &v.Spec.Template.Spec})
		}
	}
	return out
}

// allContainers returns init and regular containers (ephemeral containers
// cannot appear in a manifest that creates a pod).
func allContainers(spec *corev1.PodSpec) []*corev1.Container {
	var out []*corev1.Container
	for i := range spec.InitContainers {
		out = append(out, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		out = append(out, &spec.Containers[i])
	}
	return out
}

// ---------------------------------------------------------------- images

type imageRef struct{ name, tag, digest string }

func parseImage(ref string) imageRef {
	var r imageRef
	if i := strings.Index(ref, "@"); i >= 0 {
		r.digest = ref[i+1:]
		ref = ref[:i]
	}
	slash := strings.LastIndex(ref, "/")
	if colon := strings.LastIndex(ref, ":"); colon > slash {
		r.tag = ref[colon+1:]
		ref = ref[:colon]
	}
	r.name = ref
	return r
}

// resolveImage applies a kustomization's images: override, as kustomize does.
func resolveImage(o *object, image string) imageRef {
	r := parseImage(image)
	if ov, ok := o.ctx.images[r.name]; ok {
		if ov.NewName != "" {
			r.name = ov.NewName
		}
		if ov.NewTag != "" {
			r.tag = ov.NewTag
		}
		if ov.Digest != "" {
			r.digest = ov.Digest
			r.tag = ""
		}
	}
	return r
}

func (r imageRef) String() string {
	s := r.name
	if r.tag != "" {
		s += ":" + r.tag
	}
	if r.digest != "" {
		s += "@" + r.digest
	}
	return s
}

func (s *objectSet) checkImages(p podSpec) {
	for _, c := range allContainers(p.spec) {
		r := resolveImage(p.o, c.Image)
		switch {
		case c.Image == "":
			s.problem(p.where(), "container %q has no image", c.Name)
		case r.digest != "":
			if !digestRE.MatchString(r.digest) {
				s.problem(p.where(), "container %q: image %q has a malformed digest", c.Name, r)
			}
		case r.tag == "":
			s.problem(p.where(), "container %q: image %q is not pinned (no tag or digest)", c.Name, r)
		case r.tag == "latest":
			s.problem(p.where(), "container %q: image %q uses the moving tag 'latest'", c.Name, r)
		case !tagRE.MatchString(r.tag):
			s.problem(p.where(), "container %q: image %q has a malformed tag", c.Name, r)
		}
	}
}

// ---------------------------------------------------------------- pods

func (s *objectSet) checkPodBasics(p podSpec) {
	vols := map[string]*corev1.Volume{}
	for i := range p.spec.Volumes {
		vols[p.spec.Volumes[i].Name] = &p.spec.Volumes[i]
	}
	for _, c := range allContainers(p.spec) {
		privileged := c.SecurityContext != nil && c.SecurityContext.Privileged != nil &&
			*c.SecurityContext.Privileged
		for _, m := range c.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				s.problem(p.where(), "container %q mounts volume %q, which the pod does not define",
					c.Name, m.Name)
			}
			if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional &&
				!privileged {
				s.problem(p.where(), "container %q: Bidirectional mount propagation of %q "+
					"in a container that is not privileged", c.Name, m.MountPath)
			}
		}
		req := c.Resources.Requests
		if _, ok := req[corev1.ResourceCPU]; !ok {
			s.problem(p.where(), "container %q has no cpu request", c.Name)
		}
		if _, ok := req[corev1.ResourceMemory]; !ok {
			s.problem(p.where(), "container %q has no memory request", c.Name)
		}
	}
}

// ---------------------------------------------------------------- arguments

// flagValue finds --name=value or --name value in args (after $(VAR)
// expansion with the container's literal env values).
func flagValue(c *corev1.Container, name string) (string, bool) {
	args := append(append([]string{}, c.Command...), c.Args...)
	for i, a := range args {
		a = expandEnv(c, a)
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return expandEnv(c, args[i+1]), true
		}
	}
	return "", false
}

var envRefRE = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func expandEnv(c *corev1.Container, s string) string {
	return envRefRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		for _, e := range c.Env {
			if e.Name == name && e.ValueFrom == nil {
				return e.Value
			}
		}
		return m
	})
}

// mountOf returns the volume mounted in c at exactly mountPath.
func mountOf(spec *corev1.PodSpec, c *corev1.Container, mountPath string) (*corev1.VolumeMount, *corev1.Volume) {
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if path.Clean(m.MountPath) != path.Clean(mountPath) {
			continue
		}
		for j := range spec.Volumes {
			if spec.Volumes[j].Name == m.Name {
				return m, &spec.Volumes[j]
			}
		}
		return m, nil
	}
	return nil, nil
}

// containingMount returns the mount of c that p is in (the longest prefix).
func containingMount(spec *corev1.PodSpec, c *corev1.Container, p string) (*corev1.VolumeMount, *corev1.Volume) {
	p = path.Clean(p)
	best := ""
	for _, m := range c.VolumeMounts {
		mp := path.Clean(m.MountPath)
		if (p == mp || strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		return nil, nil
	}
	return mountOf(spec, c, best)
}

func hostPathOf(v *corev1.Volume) string {
	if v == nil || v.HostPath == nil {
		return ""
	}
	return path.Clean(v.HostPath.Path)
}

func findContainer(spec *corev1.PodSpec, pred func(*corev1.Container) bool) *corev1.Container {
	for _, c := range allContainers(spec) {
		if pred(c) {
			return c
		}
	}
	return nil
}

// ---------------------------------------------------------------- the plugin

type pluginInfo struct {
	driver   string
	cacheDir string
	found    bool
}

func (s *objectSet) checkCSIDriver() string {
	var drivers []*object
	for _, o := range s.objects {
		if _, ok := o.obj.(*storagev1.CSIDriver); ok {
			drivers = append(drivers, o)
		}
	}
	if len(drivers) != 1 {
		s.problem("manifests", "%d CSIDriver object(s), expected exactly one", len(drivers))
		if len(drivers) == 0 {
			return defaultDriverName
		}
	}
	o := drivers[0]
	d := o.obj.(*storagev1.CSIDriver)
	w := fmt.Sprintf("%s (CSIDriver %s)", o.where, d.Name)
	if d.Name != defaultDriverName {
		s.problem(w, "name is %q, expected %q", d.Name, defaultDriverName)
	}
	if d.Spec.AttachRequired == nil || *d.Spec.AttachRequired {
		s.problem(w, "attachRequired must be set to false (there is no controller)")
	}
	if d.Spec.PodInfoOnMount == nil || !*d.Spec.PodInfoOnMount {
		s.problem(w, "podInfoOnMount must be set to true")
	}
	modes := map[storagev1.VolumeLifecycleMode]int{}
	for _, m := range d.Spec.VolumeLifecycleModes {
		modes[m]++
	}
	if len(d.Spec.VolumeLifecycleModes) != 2 || modes[storagev1.VolumeLifecyclePersistent] != 1 ||
		modes[storagev1.VolumeLifecycleEphemeral] != 1 {
		s.problem(w, "volumeLifecycleModes is %v, expected [Persistent Ephemeral]", d.Spec.VolumeLifecycleModes)
	}
	if d.Spec.FSGroupPolicy == nil || *d.Spec.FSGroupPolicy != storagev1.NoneFSGroupPolicy {
		s.problem(w, "fsGroupPolicy must be None (volumes are read-only, never chowned)")
	}
	return d.Name
}

func (s *objectSet) checkPlugin(driver string) pluginInfo {
	info := pluginInfo{driver: driver}
	var plugins []podSpec
	for _, p := range s.podSpecs() {
		if _, ok := p.o.obj.(*appsv1.DaemonSet); !ok {
			continue
		}
		if findContainer(p.spec, func(c *corev1.Container) bool { return c.Name == pluginContainer }) != nil {
			plugins = append(plugins, p)
		}
	}
	if len(plugins) != 1 {
		s.problem("manifests", "%d DaemonSet(s) with a %q container, expected exactly one",
			len(plugins), pluginContainer)
		if len(plugins) == 0 {
			return info
		}
	}
	p := plugins[0]
	info.found = true
	w := p.where()
	spec := p.spec
	plugin := findContainer(spec, func(c *corev1.Container) bool { return c.Name == pluginContainer })

	if spec.PriorityClassName != "system-node-critical" {
		s.problem(w, "priorityClassName is %q, expected system-node-critical", spec.PriorityClassName)
	}
	if spec.HostNetwork {
		s.problem(w, "hostNetwork is true: the plugin and its sidecars only use unix sockets")
	}
	if plugin.SecurityContext == nil || plugin.SecurityContext.Privileged == nil ||
		!*plugin.SecurityContext.Privileged {
		s.problem(w, "container %q must be privileged (mounts, Bidirectional propagation)", plugin.Name)
	}

	if name, ok := flagValue(plugin, "driver-name"); ok && name != driver {
		s.problem(w, "--driver-name=%s, but the CSIDriver is %q", name, driver)
	}

	// The kubelet directory, with Bidirectional propagation, at its node path.
	kubeletDir := "/var/lib/kubelet"
	if v, ok := flagValue(plugin, "kubelet-dir"); ok {
		kubeletDir = path.Clean(v)
	}
	if m, v := mountOf(spec, plugin, kubeletDir); m == nil {
		s.problem(w, "container %q does not mount the kubelet directory %s", plugin.Name, kubeletDir)
	} else {
		if m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional {
			s.problem(w, "container %q: %s must be mounted with mountPropagation: Bidirectional",
				plugin.Name, kubeletDir)
		}
		if hostPathOf(v) != kubeletDir {
			s.problem(w, "container %q: %s must be the node's %s (hostPath), not %q",
				plugin.Name, kubeletDir, kubeletDir, hostPathOf(v))
		}
	}

	// Directories the node's cairnfs daemons share with the plugin: the
	// daemons run in the node's mount namespace, so the paths must match.
	for _, flag := range []string{"state-dir", "cache-dir"} {
		dir, ok := flagValue(plugin, flag)
		if !ok {
			s.problem(w, "container %q has no --%s (the default is not a host path)", plugin.Name, flag)
			continue
		}
		m, v := containingMount(spec, plugin, dir)
		hp := hostPathOf(v)
		if m == nil || hp == "" {
			s.problem(w, "container %q: --%s=%s is not on a hostPath volume", plugin.Name, flag, dir)
		} else if hp != path.Clean(m.MountPath) {
			s.problem(w, "container %q: --%s=%s: hostPath %s is mounted at %s; the node's "+
				"daemons need the same path on both sides", plugin.Name, flag, dir, hp, m.MountPath)
		}
		if flag == "cache-dir" {
			info.cacheDir = path.Clean(dir)
		}
	}

	// /dev/fuse.
	if m, v := mountOf(spec, plugin, "/dev/fuse"); m == nil || hostPathOf(v) != "/dev/fuse" ||
		v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathCharDev {
		s.problem(w, "container %q must mount the node's /dev/fuse (hostPath, type CharDevice)", plugin.Name)
	}

	// The socket, as kubelet and the sidecars see it.
	endpoint, ok := flagValue(plugin, "endpoint")
	if !ok {
		s.problem(w, "container %q has no --endpoint", plugin.Name)
		return info
	}
	sock, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok || !path.IsAbs(sock) {
		s.problem(w, "container %q: --endpoint=%s is not unix:///ABSOLUTE/PATH", plugin.Name, endpoint)
		return info
	}
	_, sockVol := containingMount(spec, plugin, sock)
	sockHostDir := hostPathOf(sockVol)
	if sockHostDir == "" {
		s.problem(w, "container %q: the socket %s is not on a hostPath volume", plugin.Name, sock)
		return info
	}
	if want := path.Join(kubeletDir, "plugins", driver); sockHostDir != want {
		s.problem(w, "the socket directory is the node's %s, expected %s", sockHostDir, want)
	}
	sockOnHost := path.Join(sockHostDir, path.Base(sock))

	sidecarSocket := func(c *corev1.Container) {
		addr, ok := flagValue(c, "csi-address")
		if !ok {
			s.problem(w, "container %q has no --csi-address", c.Name)
			return
		}
		_, v := containingMount(spec, c, addr)
		if v == nil || v.Name != sockVol.Name || path.Base(addr) != path.Base(sock) {
			s.problem(w, "container %q: --csi-address=%s is not the plugin's socket", c.Name, addr)
		}
	}

	registrar := findContainer(spec, func(c *corev1.Container) bool {
		return resolveImage(p.o, c.Image).name == registrarImage
	})
	if registrar == nil {
		s.problem(w, "no node-driver-registrar sidecar (%s)", registrarImage)
	} else {
		sidecarSocket(registrar)
		if reg, _ := flagValue(registrar, "kubelet-registration-path"); reg != sockOnHost {
			s.problem(w, "container %q: --kubelet-registration-path=%s, but the plugin's socket is %s on the node",
				registrar.Name, reg, sockOnHost)
		}
		_, v := mountOf(spec, registrar, "/registration")
		if want := path.Join(kubeletDir, "plugins_registry"); hostPathOf(v) != want {
			s.problem(w, "container %q must mount the node's %s at /registration", registrar.Name, want)
		}
	}

	liveness := findContainer(spec, func(c *corev1.Container) bool {
		return resolveImage(p.o, c.Image).name == livenessImage
	})
	if liveness == nil {
		s.problem(w, "no livenessprobe sidecar (%s)", livenessImage)
	} else {
		sidecarSocket(liveness)
		port := 9808
		if v, ok := flagValue(liveness, "health-port"); ok {
			port, _ = strconv.Atoi(v)
		}
		if plugin.LivenessProbe == nil || plugin.LivenessProbe.HTTPGet == nil {
			s.problem(w, "container %q has no HTTP livenessProbe (served by the livenessprobe sidecar)",
				plugin.Name)
		} else if got := resolvePort(plugin, plugin.LivenessProbe.HTTPGet.Port); got != port {
			s.problem(w, "container %q: the livenessProbe port is %d, the livenessprobe sidecar listens on %d",
				plugin.Name, got, port)
		}
	}

	s.checkLaunch(p, plugin, info)
	return info
}

func resolvePort(c *corev1.Container, port intstr.IntOrString) int {
	if port.Type == intstr.Int {
		return port.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == port.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return -1
}

// checkLaunch: the configuration of deploy/cairnfs-launch.sh and the
// bundle it runs must fit the pod (hostPID, same image, host paths).
func (s *objectSet) checkLaunch(p podSpec, plugin *corev1.Container, info pluginInfo) {
	w := p.where()
	m, v := mountOf(p.spec, plugin, launchConfigMount)
	if m == nil || v == nil || v.ConfigMap == nil {
		return // the launcher's default: daemons run in the plugin container
	}
	cm := s.find("v1/ConfigMap", p.o.namespace(), v.ConfigMap.Name)
	if cm == nil {
		s.problem(w, "ConfigMap %s/%s (mounted at %s) is not in the manifests",
			p.o.namespace(), v.ConfigMap.Name, launchConfigMount)
		return
	}
	text, ok := cm.obj.(*corev1.ConfigMap).Data[launchConfigKey]
	if !ok {
		s.problem(cm.where, "no %q key", launchConfigKey)
		return
	}
	conf := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, val, ok := strings.Cut(line, "=")
		if !ok {
			s.problem(cm.where, "%s: line %q is not KEY=VALUE", launchConfigKey, line)
			continue
		}
		conf[k] = val
	}
	switch conf["mode"] {
	case "direct", "bundle", "":
		return
	case "host":
	default:
		s.problem(cm.where, "%s: unknown mode %q", launchConfigKey, conf["mode"])
		return
	}
	if !p.spec.HostPID {
		s.problem(w, "mode=host needs hostPID: true (nsenter into the node's PID 1)")
	}
	for _, key := range []string{"bundle", "rundir"} {
		dir := conf[key]
		if dir == "" || !path.IsAbs(dir) {
			s.problem(cm.where, "%s: %s must be an absolute path", launchConfigKey, key)
			continue
		}
		mnt, vol := containingMount(p.spec, plugin, dir)
		if mnt == nil || hostPathOf(vol) == "" || hostPathOf(vol) != path.Clean(mnt.MountPath) {
			s.problem(w, "%s %s of %s is not on a hostPath volume mounted at its node path",
				key, dir, launchConfigKey)
		}
	}
	// The init container that installs the bundle must run the plugin's image.
	installer := findContainer(p.spec, func(c *corev1.Container) bool {
		for _, a := range append(append([]string{}, c.Command...), c.Args...) {
			if strings.HasSuffix(a, "/bundle.sh") {
				return true
			}
		}
		return false
	})
	if installer == nil {
		s.problem(w, "mode=host, but no init container runs bundle.sh install")
	} else if resolveImage(p.o, installer.Image) != resolveImage(p.o, plugin.Image) {
		s.problem(w, "container %q installs the bundle from %s, but the plugin runs %s",
			installer.Name, resolveImage(p.o, installer.Image), resolveImage(p.o, plugin.Image))
	}
}

func (s *objectSet) find(gvk, namespace, name string) *object {
	for _, o := range s.objects {
		if o.gvk == gvk && o.meta.Name == name && (namespace == "" || o.namespace() == namespace) {
			return o
		}
	}
	return nil
}

// ---------------------------------------------------------------- volumes

// The volume_context keys cairn-csi accepts (csi/csi_context.h); it refuses
// any other key, except kubelet's own csi.storage.k8s.io/ ones.
var volumeAttributeKeys = map[string]bool{
	"store": true, "ref": true, "memory_limit": true, "region": true, "endpoint": true,
}

func (s *objectSet) checkVolumeAttributes(w string, attrs map[string]string) {
	for k := range attrs {
		if !volumeAttributeKeys[k] && !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			s.problem(w, "volumeAttributes key %q is not one cairn-csi accepts "+
				"(store, ref, memory_limit, region, endpoint)", k)
		}
	}
	store, ref := attrs["store"], attrs["ref"]
	if store == "" {
		s.problem(w, "volumeAttributes has no store")
	} else if !(strings.HasPrefix(store, "file:///") || strings.HasPrefix(store, "http://") ||
		strings.HasPrefix(store, "https://") || strings.HasPrefix(store, "s3://")) {
		s.problem(w, "store %q is not a file:///, http://, https:// or s3:// URL", store)
	} else if strings.ContainsAny(store, "?#,\\\"' ") || strings.Contains(strings.SplitN(
		strings.SplitN(store, "://", 2)[1], "/", 2)[0], "@") {
		s.problem(w, "store %q has credentials, a query, a fragment or a character cairn-csi refuses", store)
	}
	if (attrs["region"] != "" || attrs["endpoint"] != "") && !strings.HasPrefix(store, "s3://") {
		s.problem(w, "region and endpoint are for s3:// stores only")
	}
	if ref == "" {
		s.problem(w, "volumeAttributes has no ref")
		return
	}
	if name, digest, ok := strings.Cut(ref, "@"); ok {
		if !refNameRE.MatchString(name) || !digestRE.MatchString(digest) {
			s.problem(w, "ref %q is not NAME@sha256:<64 hex>", ref)
		}
	} else if i := strings.LastIndex(ref, ":"); i < 0 || !refNameRE.MatchString(ref[:i]) ||
		!refTagRE.MatchString(ref[i+1:]) || ref[i+1:] == "." || ref[i+1:] == ".." {
		s.problem(w, "ref %q is not NAME:TAG", ref)
	}
}

func (s *objectSet) checkSecretRef(w, field string, ref *corev1.SecretReference, defaultNS string) {
	if ref == nil {
		return
	}
	ns := ref.Namespace
	if ns == "" {
		ns = defaultNS
	}
	o := s.find("v1/Secret", ns, ref.Name)
	if o == nil {
		s.problem(w, "%s names Secret %s/%s, which is not in the manifests", field, ns, ref.Name)
		return
	}
	sec := o.obj.(*corev1.Secret)
	for _, k := range awsKeys {
		_, inData := sec.Data[k]
		_, inString := sec.StringData[k]
		if !inData && !inString {
			s.problem(o.where, "Secret %s/%s (used by %s) has no %s", ns, ref.Name, w, k)
		}
	}
}

func (s *objectSet) checkPersistentVolumes(driver string) {
	for _, o := range s.objects {
		switch v := o.obj.(type) {
		case *corev1.PersistentVolume:
			w := fmt.Sprintf("%s (PersistentVolume %s)", o.where, v.Name)
			c := v.Spec.CSI
			if c == nil {
				continue
			}
			if c.Driver != driver {
				s.problem(w, "csi.driver is %q, expected %q", c.Driver, driver)
				continue
			}
			if c.VolumeHandle == "" {
				s.problem(w, "csi.volumeHandle is empty")
			}
			if !c.ReadOnly {
				s.problem(w, "csi.readOnly must be true: cairn volumes are read-only")
			}
			for _, m := range v.Spec.AccessModes {
				if m != corev1.ReadOnlyMany {
					s.problem(w, "access mode %s: cairn volumes are ReadOnlyMany", m)
				}
			}
			s.checkVolumeAttributes(w, c.VolumeAttributes)
			s.checkSecretRef(w, "nodeStageSecretRef", c.NodeStageSecretRef, "default")
			s.checkSecretRef(w, "nodePublishSecretRef", c.NodePublishSecretRef, "default")
			if c.ControllerPublishSecretRef != nil || c.ControllerExpandSecretRef != nil {
				s.problem(w, "controller secrets are set, but the driver has no controller")
			}
		case *corev1.PersistentVolumeClaim:
			w := fmt.Sprintf("%s (PersistentVolumeClaim %s)", o.where, v.Name)
			if v.Spec.VolumeName == "" {
				continue
			}
			pv := s.find("v1/PersistentVolume", "", v.Spec.VolumeName)
			if pv == nil {
				s.problem(w, "volumeName %q is not a PersistentVolume in the manifests", v.Spec.VolumeName)
				continue
			}
			if pv.obj.(*corev1.PersistentVolume).Spec.CSI == nil {
				continue
			}
			if v.Spec.StorageClassName == nil || *v.Spec.StorageClassName != "" {
				s.problem(w, "storageClassName must be \"\" to bind to a static PersistentVolume")
			}
			for _, m := range v.Spec.AccessModes {
				if m != corev1.ReadOnlyMany {
					s.problem(w, "access mode %s: cairn volumes are ReadOnlyMany", m)
				}
			}
		}
	}
}

func (s *objectSet) checkPodVolumes(p podSpec, driver string) {
	ns := p.o.namespace()
	for _, vol := range p.spec.Volumes {
		switch {
		case vol.CSI != nil:
			w := fmt.Sprintf("%s volume %q", p.where(), vol.Name)
			if vol.CSI.Driver != driver {
				s.problem(w, "csi.driver is %q, expected %q", vol.CSI.Driver, driver)
				continue
			}
			if vol.CSI.ReadOnly == nil || !*vol.CSI.ReadOnly {
				s.problem(w, "csi.readOnly must be true: cairn volumes are read-only")
			}
			s.checkVolumeAttributes(w, vol.CSI.VolumeAttributes)
			if r := vol.CSI.NodePublishSecretRef; r != nil {
				s.checkSecretRef(w, "nodePublishSecretRef",
					&corev1.SecretReference{Name: r.Name, Namespace: ns}, ns)
			}
		case vol.PersistentVolumeClaim != nil:
			w := fmt.Sprintf("%s volume %q", p.where(), vol.Name)
			if s.find("v1/PersistentVolumeClaim", ns, vol.PersistentVolumeClaim.ClaimName) == nil {
				s.problem(w, "claim %s/%s is not in the manifests", ns, vol.PersistentVolumeClaim.ClaimName)
			}
		}
	}
}

// checkWarm: a `cairn warm` container must write into the node cache, the
// very directory the plugin's daemons read, at its node path.
func (s *objectSet) checkWarm(p podSpec, info pluginInfo) {
	for _, c := range allContainers(p.spec) {
		args := append(append([]string{}, c.Command...), c.Args...)
		isWarm := false
		for i := 0; i+1 < len(args); i++ {
			if path.Base(args[i]) == "cairn" && args[i+1] == "warm" {
				isWarm = true
			}
		}
		if !isWarm {
			continue
		}
		w := fmt.Sprintf("%s container %q", p.where(), c.Name)
		dir, ok := flagValue(c, "cache-dir")
		if !ok {
			s.problem(w, "cairn warm without --cache-dir (the default is not the node cache)")
			continue
		}
		m, v := containingMount(p.spec, c, dir)
		if m == nil || hostPathOf(v) == "" || hostPathOf(v) != path.Clean(m.MountPath) {
			s.problem(w, "--cache-dir %s is not a hostPath mounted at its node path", dir)
		}
		if info.found && info.cacheDir != "" && path.Clean(dir) != info.cacheDir {
			s.problem(w, "--cache-dir %s, but the plugin's daemons use %s", dir, info.cacheDir)
		}
		if _, ok := flagValue(c, "store"); !ok {
			s.problem(w, "cairn warm without --store")
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				o := s.find("v1/Secret", p.o.namespace(), ref.Name)
				if o == nil {
					s.problem(w, "env %s: Secret %s/%s is not in the manifests", e.Name, p.o.namespace(), ref.Name)
					continue
				}
				sec := o.obj.(*corev1.Secret)
				_, inData := sec.Data[ref.Key]
				_, inString := sec.StringData[ref.Key]
				if !inData && !inString {
					s.problem(w, "env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
				}
			}
		}
	}
}

// ---------------------------------------------------------------- all

func (s *objectSet) check() []string {
	driver := s.checkCSIDriver()
	info := s.checkPlugin(driver)
	for _, p := range s.podSpecs() {
		s.checkImages(p)
		s.checkPodBasics(p)
		s.checkPodVolumes(p, driver)
		s.checkWarm(p, info)
	}
	s.checkPersistentVolumes(driver)
	seen := map[string]string{}
	for _, o := range s.objects {
		key := o.gvk + " " + o.namespace() + "/" + o.meta.Name
		if first, dup := seen[key]; dup {
			s.problem(o.where, "%s %s is also defined at %s", kindOf(o), o.meta.Name, first)
		}
		seen[key] = o.where
	}
	return s.problems
}
