#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# make check-vm: the test suite on another kernel (default: Debian 12's 6.1 cloud kernel) in a
# virtual machine, as root and then as a plain user.
#
#   sh tools/check-vm.sh BUILD_DIR      (BUILD_DIR holds a static test/runner and faultline)
#
# The kernel package is fetched with apt-get download and unpacked with dpkg -x (never
# installed); an initramfs holds busybox-static, the runner and the faultline command; qemu
# boots it (KVM when /dev/kvm is usable, TCG otherwise) with the serial console in a log file.
# Environment:
#   KERNEL=PKG|PATH   a kernel package (linux-image-...) or a bzImage path; default: the newest
#                     linux-image-6.1.0-N-cloud-amd64 apt knows
#   VM_TESTS="PAT..." the runner's patterns (default: every test)
#   VM_TIMEOUT=SEC    the whole guest is killed after this (default 1500)
#   VM_SCALE=F        FL_TEST_TIMEOUT_SCALE in the guest (default 10 under TCG, 2 with KVM)
#   VM_MEM=MiB, VM_CPUS=N  (default 2048, 2)
#   VM_DIR=DIR        work directory: kernel cache, initramfs, console.log (default build-vm)
#   VM_ENV="A=1 B=2"  more environment for the runner in the guest (e.g. FL_TEST_LOG=3)
set -euo pipefail
cd "$(dirname "$0")/.."

o=${1:-build-static}
dir=${VM_DIR:-build-vm}
mem=${VM_MEM:-2048}
cpus=${VM_CPUS:-2}
limit=${VM_TIMEOUT:-1500}
tests=${VM_TESTS:-}
start=$(date +%s)

say() { printf 'check-vm: %s\n' "$*"; }
die() { printf 'check-vm: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ what it needs
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v gzip >/dev/null || need+=(gzip)
command -v timeout >/dev/null || need+=(coreutils)
# The dynamically linked busybox package would give the guest a program it cannot run.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
		die "missing ${need[*]}; install them as root: apt-get install ${need[*]}"
	fi
	say "installing ${need[*]}"
	apt-get update -qq >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			"${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
fi
busybox=$(dpkg -L busybox-static | grep -m1 '/busybox$')
for f in "$o/test/runner" "$o/faultline"; do
	[ -x "$f" ] || die "$f missing: build it with make O=$o LDFLAGS=-static (make check-vm does)"
	# A dynamically linked binary cannot run in the guest, which has no C library.
	if LC_ALL=C readelf -l "$f" 2>/dev/null | grep -q 'Requesting program interpreter'; then
		die "$f is dynamically linked; build it with LDFLAGS=-static"
	fi
done

mkdir -p "$dir"

# ------------------------------------------------------------------ the kernel
kernel=${KERNEL:-}
if [ -n "$kernel" ] && [ -f "$kernel" ]; then
	bzimage=$kernel
	kname=$(basename "$kernel")
else
	if [ -z "$kernel" ]; then
		pick() {
			apt-cache pkgnames linux-image-6.1.0- 2>/dev/null |
				grep -E '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' | sort -V -r |
				while read -r p; do
					c=$(apt-cache policy "$p" | awk '/Candidate:/ { print $2 }')
					if [ -n "$c" ] && [ "$c" != "(none)" ]; then
						echo "$p"
						break
					fi
				done
		}
		kernel=$(pick)
		if [ -z "$kernel" ] && [ "$(id -u)" -eq 0 ]; then
			apt-get update -qq >/dev/null || true
			kernel=$(pick)
		fi
		[ -n "$kernel" ] ||
			die "apt knows no linux-image-6.1.0-N-cloud-amd64 (a Debian 12 source list and apt-get update are needed; or KERNEL=path/to/bzImage)"
	fi
	kname=$kernel
	kdir="$dir/kernel/$kernel"
	if [ ! -d "$kdir/root/boot" ]; then
		rm -rf "$kdir" && mkdir -p "$kdir"
		say "downloading $kernel"
		(cd "$kdir" && apt-get download -qq "$kernel" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
		deb=$(ls "$kdir"/*.deb 2>/dev/null | head -n 1)
		[ -n "$deb" ] || die "apt-get download $kernel fetched nothing"
		dpkg -x "$deb" "$kdir/root"
	fi
	bzimage=$(ls "$kdir"/root/boot/vmlinuz-* | head -n 1)
	config=$(ls "$kdir"/root/boot/config-* | head -n 1)
	# The guest loads no modules: what it needs must be built in.
	for c in SERIAL_8250_CONSOLE DEVTMPFS BLK_DEV_INITRD RD_GZIP USERFAULTFD HUGETLBFS TMPFS \
		UNIX INET; do
		grep -q "^CONFIG_$c=y" "$config" || die "$config: CONFIG_$c is not built in"
	done
fi

# ------------------------------------------------------------------ the initramfs
init=$(mktemp -d)
trap 'rm -rf "$init"' EXIT
chmod 755 "$init"
mkdir -p "$init"/{bin,sbin,dev,proc,sys,tmp,var/tmp,root,fl/test,etc}
cp "$busybox" "$init/bin/busybox"
for a in $("$busybox" --list); do
	[ "$a" = busybox ] || ln -sf busybox "$init/bin/$a"
done
cp "$o/test/runner" "$init/fl/test/runner"
cp "$o/faultline" "$init/fl/faultline"
printf '%s\n' "${VM_ENV:-}" > "$init/fl/env"
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n' > "$init/etc/passwd"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$init/etc/hosts"
printf 'root:x:0:\nuser:x:1000:\n' > "$init/etc/group"
cat > "$init/init" <<'INIT'
#!/bin/sh
# The guest: mount what the tests use, run the suite as root, then as user 1000, power off.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /dev/hugepages
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t hugetlbfs -o mode=1777 hugetlbfs /dev/hugepages
chmod 1777 /var/tmp
ip link set lo up
hostname faultline-vm
set -- $(cat /proc/cmdline)
scale=10 tests=
for a; do
	case $a in
	fl.scale=*) scale=${a#fl.scale=} ;;
	fl.tests=*) tests=$(echo "${a#fl.tests=}" | tr , ' ') ;;
	esac
done
echo "@@fl-vm kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ { print $2 / 1024 }' /proc/meminfo) MiB"
echo "@@fl-vm /dev/userfaultfd: $(ls -l /dev/userfaultfd 2>&1)"
echo "@@fl-vm vm.unprivileged_userfaultfd = $(cat /proc/sys/vm/unprivileged_userfaultfd)"
echo "@@fl-vm probe (root):"
/fl/faultline probe 2>&1
pass() {	# pass NAME [USER]
	rm -rf /tmp/* /var/tmp/*
	echo "@@fl-vm begin $1"
	cmd="cd /tmp && FL_REQUIRE_UFFD=1 FL_TEST_TIMEOUT_SCALE=$scale $(cat /fl/env) /fl/test/runner $tests"
	if [ -n "${2:-}" ]; then
		( su -s /bin/sh -c "$cmd" "$2" 2>&1; echo $? > /rc ) | tee /out
	else
		( sh -c "$cmd" 2>&1; echo $? > /rc ) | tee /out
	fi
	echo "@@fl-vm end $1 rc=$(cat /rc) $(tail -n 1 /out)"
}
pass root
# A plain user on a default system: /dev/userfaultfd is root's and
# vm.unprivileged_userfaultfd is 0, so the library opens user-mode-only
# descriptors. Root reserves the huge pages the user's hugetlb tests use.
echo 40 > /proc/sys/vm/nr_hugepages
echo "@@fl-vm probe (user):"
su -s /bin/sh -c "/fl/faultline probe" user 2>&1
pass user user
echo "@@fl-vm done"
sync
reboot -f
INIT
chmod 755 "$init/init"
chmod -R a+rX "$init/fl"
(cd "$init" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1) > "$dir/initramfs.gz"

# ------------------------------------------------------------------ the guest
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
	accel=(-accel kvm -cpu host)
	kind=KVM
	scale=${VM_SCALE:-2}
else
	accel=(-accel tcg,thread=multi -cpu max)
	kind="TCG (no usable /dev/kvm)"
	scale=${VM_SCALE:-10}
fi
log="$dir/console.log"
: > "$log"
append="console=ttyS0 panic=-1 loglevel=4 fl.scale=$scale"
[ -n "$tests" ] && append="$append fl.tests=$(echo "$tests" | tr ' ' ,)"
say "booting $kname under $kind, $cpus CPUs, $mem MiB; console: $log; limit ${limit}s"
rc=0
timeout --signal=KILL "$limit" qemu-system-x86_64 "${accel[@]}" -m "$mem" -smp "$cpus" \
	-nodefaults -display none -no-reboot -monitor none -serial "file:$log" \
	-kernel "$bzimage" -initrd "$dir/initramfs.gz" -append "$append" || rc=$?
secs=$(( $(date +%s) - start ))
if [ $rc -eq 137 ]; then
	say "the guest did not finish within ${limit}s: killed (VM_TIMEOUT); the end of $log:"
	tail -n 20 "$log" | sed 's/^/    /'
	exit 1
fi
[ $rc -eq 0 ] || die "qemu exited with status $rc; see $log"

# ------------------------------------------------------------------ the verdict
status=0
for p in root user; do
	line=$(tr -d '\r' < "$log" | grep -a "^@@fl-vm end $p " || true)
	if [ -z "$line" ]; then
		say "$p: no result (the guest stopped early); see $log"
		status=1
		continue
	fi
	r=$(sed -n 's/^@@fl-vm end [a-z]* rc=\([0-9]*\) .*/\1/p' <<<"$line")
	say "$p: ${line#*rc=$r }"
	if [ "$r" != 0 ]; then
		tr -d '\r' < "$log" | sed -n "/^@@fl-vm begin $p\$/,/^@@fl-vm end $p /p" |
			grep -a '^FAIL' | sed "s/^/    $p: /"
		status=1
	fi
done
grep -aq '^@@fl-vm done' "$log" || { say "the guest did not reach its end; see $log"; status=1; }
say "$kname, $kind: $([ $status -eq 0 ] && echo passed || echo FAILED) in ${secs}s"
exit $status
