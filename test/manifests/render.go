package manifests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Overlays are the deployable overlays, relative to manifests/overlays.
var Overlays = []string{"self-signed", "cert-manager"}

// Root is the repository's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Render builds manifests/<dir> (for example "overlays/self-signed") with
// kustomize, as `kubectl apply -k` would, and returns its objects.
func Render(dir string) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(Root(), "manifests", dir))
	if err != nil {
		return nil, fmt.Errorf("kustomize build manifests/%s: %w", dir, err)
	}
	raw, err := res.AsYaml()
	if err != nil {
		return nil, err
	}
	return Decode(raw)
}

// Decode splits a YAML stream into objects.
func Decode(raw []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// Select returns the objects of kind (all of them, or those named names).
func Select(objs []*unstructured.Unstructured, kind string, names ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() != kind {
			continue
		}
		if len(names) == 0 {
			out = append(out, o)
			continue
		}
		for _, n := range names {
			if o.GetName() == n {
				out = append(out, o)
			}
		}
	}
	return out
}

// RenderFile decodes manifests/<file> as it is (no kustomize).
func RenderFile(file string) ([]*unstructured.Unstructured, error) {
	raw, err := os.ReadFile(filepath.Join(Root(), "manifests", file))
	if err != nil {
		return nil, err
	}
	return Decode(raw)
}
