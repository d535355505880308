#!/bin/bash
# A Debian system of another release as a directory: the build root of
# `make deb-trixie`, and the root of the lab's trixie host.
#
#   debian-root.sh SUITE build BASE    Build-Depends of source libvirt BASE
#                                      (from SUITE's deb-src Sources index)
#   debian-root.sh SUITE lab BASE      Debian's libvirt-daemon-system and
#                                      libvirt-clients BASE, and SUITE's QEMU
#
# Prints the root's path.  Each root is made once and cached outside the
# clone, in $CACHE_DIR/SUITE-root/{base,build,lab}: base is debootstrap's
# minbase of SUITE with SUITE, SUITE-updates and SUITE-security from
# deb.debian.org; build and lab are copies of it with their packages.  A
# root is complete when it has .complete; remove the directory to make it
# again.  The only network used is deb.debian.org, by debootstrap and apt.
#
# `inroot ROOT CMD...` (also sourced by deb.sh) runs CMD in ROOT, in a
# private mount namespace with /proc, /dev and /sys mounted, so nothing
# stays mounted when it exits.
set -euo pipefail
. "$(dirname "$0")/common.sh"

SUITE=${1:-} KIND=${2:-} BASE=${3:-}
ROOTS_DIR=$CACHE_DIR/$SUITE-root

# Run CMD in ROOT with a private /proc, /dev, /sys; BINDS is a list of
# directories bind-mounted at the same path inside.
inroot() {  # [BINDS="dir..."] inroot ROOT CMD...
    local root=$1; shift
    # shellcheck disable=SC2016
    unshare --mount --propagation private -- /bin/bash -euc '
        root=$1; shift
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount -t sysfs sysfs "$root/sys" 2>/dev/null || mount --rbind /sys "$root/sys"
        for d in ${BINDS:-}; do mkdir -p "$root$d"; mount --bind "$d" "$root$d"; done
        cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
        exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
            DEBIAN_FRONTEND=noninteractive "$@"' inroot "$root" "$@"
}

make_base() {
    local r=$ROOTS_DIR/base
    [ -f "$r/.complete" ] && return 0
    command -v debootstrap >/dev/null || die "debootstrap is missing; run 'make deps'"
    rm -rf "$r" "$r.tmp"
    mkdir -p "$ROOTS_DIR"
    msg "debootstrap $SUITE (minbase) into $r" >&2
    timeout 1200 debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        "$SUITE" "$r.tmp" http://deb.debian.org/debian > "$ROOTS_DIR/debootstrap.log" 2>&1 || {
        tail -20 "$ROOTS_DIR/debootstrap.log" >&2; die "debootstrap $SUITE failed (log: $ROOTS_DIR/debootstrap.log)"; }
    cat > "$r.tmp/etc/apt/sources.list" <<EOS
deb http://deb.debian.org/debian $SUITE main
deb http://deb.debian.org/debian $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
deb-src http://deb.debian.org/debian $SUITE main
deb-src http://deb.debian.org/debian $SUITE-updates main
deb-src http://deb.debian.org/debian-security $SUITE-security main
EOS
    # Recommends stay out, as in the lab's other installs.
    echo 'APT::Install-Recommends "false";' > "$r.tmp/etc/apt/apt.conf.d/99libvirt-tunnel"
    timeout 600 bash -c "$(declare -f inroot); inroot '$r.tmp' apt-get update -q" > "$ROOTS_DIR/update.log" 2>&1 || {
        tail -20 "$ROOTS_DIR/update.log" >&2; die "apt-get update in the $SUITE root failed"; }
    touch "$r.tmp/.complete"
    mv "$r.tmp" "$r"
}

# Check that SUITE's archive has source libvirt BASE: the version the
# packages are rebuilt from.
check_base() {
    local root=$1 v
    v=$(inroot "$root" apt-cache showsrc libvirt | awk '$1 == "Version:" {print $2}' | sort -u | tr '\n' ' ')
    case " $v " in *" $BASE "*) ;; *) die "$SUITE's Sources index has libvirt $v, not $BASE" ;; esac
}

make_kind() {
    local r=$ROOTS_DIR/$KIND
    if [ -f "$r/.complete" ] && [ "$(cat "$r/.complete")" = "$BASE" ]; then
        echo "$r"
        return 0
    fi
    make_base
    rm -rf "$r" "$r.tmp"
    cp -a "$ROOTS_DIR/base" "$r.tmp"
    rm -f "$r.tmp/.complete"
    inroot "$r.tmp" apt-get update -q > "$ROOTS_DIR/$KIND.log" 2>&1 ||
        die "apt-get update in the $SUITE root failed (log: $ROOTS_DIR/$KIND.log)"
    check_base "$r.tmp"
    case $KIND in
    build)
        msg "$SUITE build root: Build-Depends of libvirt $BASE" >&2
        # apt-get build-dep reads Build-Depends from the Sources index (no
        # .dsc needed); what deb.sh needs beyond them: ccache, git, file.
        timeout 1800 bash -c "$(declare -f inroot); inroot '$r.tmp' apt-get build-dep -y -q 'libvirt=$BASE' &&
            inroot '$r.tmp' apt-get install -y -q ccache git file xz-utils" >> "$ROOTS_DIR/$KIND.log" 2>&1 || {
            tail -20 "$ROOTS_DIR/$KIND.log" >&2; die "installing libvirt's Build-Depends in the $SUITE root failed (log: $ROOTS_DIR/$KIND.log)"; }
        ;;
    lab)
        msg "$SUITE lab root: Debian's libvirt $BASE and $SUITE's QEMU" >&2
        # QEMU's user and the kvm group with this machine's ids, which the
        # lab gives search permission on build/ and owns /dev/kvm with;
        # Debian's maintainer scripts keep an existing user.
        local u g
        g=$(getent group kvm | cut -d: -f3) u=$(getent passwd libvirt-qemu | cut -d: -f3)
        if [ -z "$g" ] || [ -z "$u" ]; then
            die "no libvirt-qemu user or kvm group on this machine (lab.sh makes them)"
        fi
        inroot "$r.tmp" groupadd -r -g "$g" kvm 2>/dev/null || inroot "$r.tmp" groupmod -g "$g" kvm
        inroot "$r.tmp" useradd -r -u "$u" -g kvm -d /var/lib/libvirt -s /usr/sbin/nologin \
            -c "Libvirt Qemu" libvirt-qemu
        # No service starts while apt runs, as in a chroot.
        printf '#!/bin/sh\nexit 101\n' > "$r.tmp/usr/sbin/policy-rc.d"
        chmod 755 "$r.tmp/usr/sbin/policy-rc.d"
        timeout 1800 bash -c "$(declare -f inroot); inroot '$r.tmp' apt-get install -y -q \
            'libvirt-daemon-system=$BASE' 'libvirt-clients=$BASE' qemu-system-x86 qemu-utils" \
            >> "$ROOTS_DIR/$KIND.log" 2>&1 || {
            tail -20 "$ROOTS_DIR/$KIND.log" >&2; die "installing Debian's libvirt in the $SUITE root failed (log: $ROOTS_DIR/$KIND.log)"; }
        rm -f "$r.tmp/usr/sbin/policy-rc.d"
        ;;
    *) die "debian-root.sh: KIND is build or lab" ;;
    esac
    inroot "$r.tmp" apt-get clean
    echo "$BASE" > "$r.tmp/.complete"
    mv "$r.tmp" "$r"
    echo "$r"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
    case $KIND in build|lab) ;; *) sed -n '2,18p' "$0" >&2; exit 2 ;; esac
    if [ -z "$SUITE" ] || [ -z "$BASE" ]; then
        die "debian-root.sh: SUITE and libvirt version needed"
    fi
    make_kind
fi
