#!/usr/bin/env bash
# Build kube-apiserver 1.20.2 for the tests from Debian bookworm's `kubernetes` source package,
# offline (only Debian's repositories are needed). No package registry ships a kube-apiserver
# binary that installs without a download at run time, and 1.20.2 is the only server Debian ships.
#
# Usage: tools/k8s/build-kube-apiserver.sh            -> builds if needed, prints the binary's path
#        tools/k8s/build-kube-apiserver.sh --cached   -> prints the path if built, else exits 1
# The binary goes to ${AICD_CACHE:-$HOME/.cache/aicd}/kube-apiserver/<key>/kube-apiserver, where
# <key> hashes this script and the Debian source version: a second run finds it and returns at once.
# Work files (sources, Go build cache: about 1.5 GB) stay in ${K8S_WORK:-$CACHE/k8s-build}, so a
# rebuild after a change of this script takes seconds. Needs root for apt-get (golang, reflect2).
# First build: about 5-8 min on 2 cores, 1.3 GB peak memory, a 110 MB binary.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VER=1.20.5+really1.20.2-1.1+deb12u1
CACHE=${AICD_CACHE:-$HOME/.cache/aicd}
KEY=$( (cat "$HERE/build-kube-apiserver.sh"; echo "$VER") | sha256sum | cut -c1-16)
OUT="$CACHE/kube-apiserver/$KEY"
if [ -x "$OUT/kube-apiserver" ]; then echo "$OUT/kube-apiserver"; exit 0; fi
if [ "${1:-}" = "--cached" ]; then echo "kube-apiserver is not built yet: run \`make kube-apiserver\`" >&2; exit 1; fi
W=${K8S_WORK:-$CACHE/k8s-build}
mkdir -p "$OUT" "$W"/{src,lists/partial,cache/archives/partial}
exec 3>&1 1>&2  # progress to stderr; only the path goes to stdout

# A private sources list with a deb-src line for the machine's own Debian mirror: /etc/apt stays untouched.
URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$URI" ] || URI=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
echo "deb-src $URI bookworm main" > "$W/src.list"
APT=(-o Dir::Etc::SourceList="$W/src.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$W/lists" -o Dir::Cache="$W/cache")
cd "$W/src"
if [ ! -d kubernetes-1.20.2 ]; then
  apt-get "${APT[@]}" update -qq
  apt-get "${APT[@]}" source --download-only "kubernetes=$VER"
  tar xzf kubernetes_1.20.5+really1.20.2.orig.tar.gz
fi
if ! [ -x /usr/lib/go-1.19/bin/go ] || ! [ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-1.19-go golang-github-modern-go-reflect2-dev >/dev/null
fi
# Trap 1: the vendored reflect2 1.0.1 crashes under Go >= 1.18; Debian's 1.0.2 sources replace it.
R=kubernetes-1.20.2/vendor/github.com/modern-go/reflect2
rm -rf "$R"; mkdir -p "$R"
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.{go,s} "$R"/; rm -f "$R"/*_test.go
export PATH=/usr/lib/go-1.19/bin:$PATH CGO_ENABLED=0 GO111MODULE=off GOPROXY=off GOFLAGS= \
       GOPATH="$W/gopath" GOCACHE="$W/gocache"
mkdir -p "$GOPATH/src/k8s.io"; ln -sfn "$W/src/kubernetes-1.20.2" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"
# Trap 2: pkg/generated/openapi/zz_generated.openapi.go is not in the tarball; generate it.
if [ ! -f pkg/generated/openapi/zz_generated.openapi.go ]; then
  go build -o "$W/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  DIRS=$( (find pkg cmd plugin third_party -name '*.go'; find -L vendor/k8s.io -name '*.go' \
            -not -path 'vendor/k8s.io/code-generator/*' -not -path 'vendor/k8s.io/sample-apiserver/*') \
          | grep -v testdata | xargs grep -l '^// *+k8s:openapi-gen=' | xargs -n1 dirname | LC_ALL=C sort -u)
  "$W/openapi-gen" -i "$(echo "$DIRS" | sed 's#^#k8s.io/kubernetes/#' | paste -sd,)" \
    -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$W/openapi-report.txt"
fi
LD="-s -w"
for P in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LD="$LD -X $P.gitVersion=v1.20.2 -X $P.gitMajor=1 -X $P.gitMinor=20 -X $P.gitTreeState=clean"
done
go build -ldflags "$LD" -o "$OUT/kube-apiserver.tmp" ./cmd/kube-apiserver
mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"   # never a half-written binary under the cached name
echo "$OUT/kube-apiserver" >&3
