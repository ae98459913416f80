#!/usr/bin/env bash
# Install the Debian packages that the README's commands, the kernel build,
# the QEMU guest and the tests need (the guest runs the host's root, so every
# program it runs is a host package), only when one is missing (apt-get update
# is slow and needs the network).  `make fresh-test` checks the list.
set -euo pipefail
packages=(
	# the README's first command: venv, pip (PyPI over https), the C scan
	python3 python3-venv python3-dev gcc libc6-dev ca-certificates
	# the bpf backend (optional at install): clang -target bpf compiles its task
	# iterator, libbpf loads it; bpftool inspects it (bpftool prog, btf dump)
	clang libbpf-dev bpftool
	# the kernel build (vm/kernel.py) and the series check (git am, checkpatch)
	linux-source-6.1 xz-utils make flex bison bc libelf-dev libssl-dev cpio
	dwarves perl git rsync kmod
	# the guest: QEMU, its initramfs's busybox; the guest runs the host's /
	qemu-system-x86 busybox-static
	# programs the tests run in the guest: insmod/rmmod (kmod), unshare and
	# setpriv (util-linux), mount, ps/pgrep (procps), gcc (above)
	util-linux mount procps
	# make stress: /usr/bin/time
	time
	# tests/test_exporter_*.py: a real Prometheus server and promtool
	prometheus
	# tests/test_man_pages.py: groff renders docs/man/*.2 (man -l uses it too)
	groff-base man-db
)
# One dpkg-query for the whole list: `make test` and `make kernel` call this every time.
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null |
	awk '$NF == "installed" { print $1 }' || true)
missing=()
for pkg in "${packages[@]}"; do
	grep -qxF "$pkg" <<<"$installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "missing Debian packages: ${missing[*]} (run 'make deps' as root)" >&2
	exit 1
fi
echo "installing: ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
