#!/usr/bin/env bash
# Builds what the qemu NVMe/TCP suite boots, into $1 (bin/vm): the Debian
# kernel (package name resolved now: its ABI number changes with point
# releases) and a base initramfs with static busybox, nvme-cli, mke2fs,
# e2fsck, blkid and dmsetup (with their shared libraries) and the kernel
# modules for an nvmet target, an NVMe/TCP host and device-mapper
# multipath (the node agent's stable device). The test appends its own cpio (the guest test
# binary) at run time. Needs root and Debian's packages.
set -euo pipefail
OUT=${1:?usage: build.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
need=""
for t in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static nvme:nvme-cli cpio:cpio depmod:kmod dmsetup:dmsetup blkid:util-linux e2fsck:e2fsprogs; do
	command -v "${t%%:*}" >/dev/null || need="$need ${t#*:}"
done
if [ -n "$need" ]; then
	echo ">> installing$need"
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need >/dev/null
fi
resolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'; }
PKG=$(resolve)
if [ -z "$PKG" ]; then # a new machine may have no package lists yet
	apt-get update -qq >/dev/null
	PKG=$(resolve)
fi
K=${PKG#linux-image-}
[ -n "$K" ] || { echo "cannot resolve the Debian kernel package" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo ">> kernel $PKG"
(cd "$WORK" && apt-get download "$PKG" >/dev/null && dpkg-deb -x ./*.deb x)
depmod -b "$WORK/x" "$K"
R=$WORK/root
mkdir -p "$R"/{bin,sbin,etc/nvme,proc,sys,dev,tmp,mnt,lib/modules/$K,lib64,lib/x86_64-linux-gnu}
cp "$(command -v busybox)" "$R/bin/busybox"
for b in "$(command -v nvme)" "$(command -v mke2fs)" "$(command -v e2fsck)" "$(command -v blkid)" "$(command -v dmsetup)"; do
	cp "$b" "$R/sbin/"
	for l in $(ldd "$b" | grep -o '/lib[^ ]*'); do mkdir -p "$R$(dirname "$l")"; cp -L "$l" "$R$l"; done
done
ln -s mke2fs "$R/sbin/mkfs.ext4"
ln -s e2fsck "$R/sbin/fsck.ext4"
M=$WORK/x/lib/modules/$K
for m in configfs nvme-core nvme-fabrics nvme-tcp nvmet nvmet-tcp loop ext4 dm-mod dm-multipath dm-round-robin crc32c_generic crc32c-intel crct10dif_generic crc64_rocksoft_generic libcrc32c; do
	line=$(grep -E "/$m.ko(\.[a-z]+)?:" "$M/modules.dep" || true)
	[ -n "$line" ] || continue
	for f in ${line%%:*} ${line#*:}; do mkdir -p "$R/lib/modules/$K/$(dirname "$f")"; cp "$M/$f" "$R/lib/modules/$K/$f"; done
done
cp "$M"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$K/"
depmod -b "$R" "$K"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/base.cpio.gz"
cp "$WORK"/x/boot/vmlinuz-"$K" "$OUT/vmlinuz"
echo "$K" > "$OUT/kernel-version"
echo ">> built $OUT (kernel $K)"
