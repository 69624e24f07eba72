// Package vm runs the node agent's NVMe/TCP connector against a real
// Linux NVMe/TCP stack: a Debian kernel booted under qemu (TCG) whose
// initramfs (hack/vm/build.sh, cached in bin/vm) carries nvmet and
// nvme-tcp. The guest test (package guest, build tag vmguest) is compiled
// statically, appended to the initramfs and run as part of /init; it sets
// up a kernel nvmet target the way the RDS exports a volume (its
// allowed_hosts mirroring nvme-tcp-server-allow-host-name) and drives the
// connector. The host test reads the verdict from the serial console and
// fails with the guest's log.
package vm
