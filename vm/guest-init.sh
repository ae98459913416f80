#!/bin/busybox sh
# PID 1 of the test guest.  It mounts the host's root read-only over 9p,
# the work tree and the run directory read-write on top, runs the run
# directory's cmd.sh as root in a chroot, and leaves its exit status and
# the kernel log in the run directory.  A run without a status file is a
# lost VM to the host.
export PATH=/bin

busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev
# Tests run servers on loopback (the Prometheus exporter test).
busybox ip link set lo up

work=
for arg in $(busybox cat /proc/cmdline); do
	case "$arg" in
	tamalloc.work=*) work="${arg#tamalloc.work=}" ;;
	esac
done

p9="trans=virtio,version=9p2000.L,msize=512000"
root=/newroot
busybox mkdir -p $root
busybox mount -t 9p -o "$p9,ro,cache=loose" hostroot $root || busybox poweroff -f
busybox mount -t proc proc $root/proc
busybox mount -t sysfs sysfs $root/sys
# tamalloc oom and its tests: cgroup v2 with the memory controller for children.
busybox mount -t cgroup2 -o nsdelegate cgroup2 $root/sys/fs/cgroup &&
	echo +memory >$root/sys/fs/cgroup/cgroup.subtree_control
busybox mount -t devtmpfs devtmpfs $root/dev
busybox mkdir -p $root/dev/pts $root/dev/shm
busybox mount -t devpts devpts $root/dev/pts
for dir in /dev/shm /tmp /run /var/tmp /var/lib/dpkg/updates; do
	busybox mount -t tmpfs tmpfs "$root$dir" 2>/dev/null
done
busybox mkdir -p $root/run/tamalloc-vm
busybox mount -t 9p -o "$p9,cache=none" run $root/run/tamalloc-vm
# The work tree may live under a directory just hidden by a tmpfs (a clone in
# /tmp): recreate its mount point there.
if [ -n "$work" ]; then
	busybox mkdir -p "$root$work"
	busybox mount -t 9p -o "$p9,cache=mmap" work "$root$work"
fi

# The command's output goes to the second serial port, raw, so that the
# host sees it unmixed with kernel messages.
busybox stty -F /dev/ttyS1 raw -echo 2>/dev/null
busybox chroot $root /usr/bin/env -i \
	HOME=/root TERM=dumb LANG=C.UTF-8 \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	TAMALLOC_IN_VM=1 PYTHONDONTWRITEBYTECODE=1 \
	/bin/sh /run/tamalloc-vm/cmd.sh </dev/null >/dev/ttyS1 2>&1
echo $? >$root/run/tamalloc-vm/status.tmp
busybox dmesg >$root/run/tamalloc-vm/dmesg.txt
busybox mv $root/run/tamalloc-vm/status.tmp $root/run/tamalloc-vm/status
busybox sync
busybox umount $root/run/tamalloc-vm
busybox poweroff -f
