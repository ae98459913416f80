#!/usr/bin/env bash
# Install the Debian packages the kernel build and the QEMU guest need,
# only when one is missing (apt-get update is slow and needs the network).
set -euo pipefail
packages=(linux-source-6.1 qemu-system-x86 busybox-static flex bison bc
	libelf-dev libssl-dev cpio dwarves make gcc git perl)
missing=()
for pkg in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "missing Debian packages: ${missing[*]} (run 'make deps' as root)" >&2
	exit 1
fi
echo "installing: ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
