#!/bin/bash
# make deb, make deb-trixie: Debian packages of libvirt 11.3.0 with the
# series, built to install over Debian's own libvirt 11.3.0 packages
# (bookworm-backports; Debian 13).
#
# Debian's packaging source (the .dsc and debian.tar.xz of 11.3.0-2~bpo12+1)
# is not downloadable here, while its binary packages and the Sources index
# (Build-Depends, the binary package list) are.  So the packages are made by
# rebuilding, not by dpkg-buildpackage:
#
#   1. download every binary package Debian built from source libvirt
#      11.3.0-2~bpo12+1 (the Package-List of the Sources index);
#   2. build the patched tree with Debian's configuration: the same paths,
#      drivers, storage backends and options, read off Debian's binaries
#      (virsh -V, the file lists, the strings the daemons carry), with
#      dpkg-buildflags' hardening flags, and install it into a staging root;
#   3. unpack each Debian package and replace its files with the staging
#      root's: every ELF file (there must be one for each, so no binary of
#      Debian's build is mixed with ours), and every other file whose content
#      differs.  A differing non-ELF file outside what the series changes
#      (DEB_EXPECTED below) means the configuration no longer matches
#      Debian's, and stops the build;
#   4. give every package the version $DEB_VERSION, which sorts above
#      Debian's, with the "(= version)" relations between them updated, a
#      changelog entry, fresh md5sums and Installed-Size, and rebuild it.
#
# Maintainer scripts, conffiles, init scripts and Debian's own files stay
# Debian's, so the packages keep Debian's behaviour and defaults (libvirtd,
# QEMU as libvirt-qemu under DAC, the AppArmor profiles).
#
# Output: build/debs/*.deb and build/debs/SUMMARY.
#
#   deb.sh [bookworm|trixie]
#
# bookworm (the default, make deb): over bookworm-backports' packages, built
# on this machine (Debian 12) from build/libvirt.
#
# trixie (make deb-trixie): over Debian 13's packages, built in a trixie
# build root (scripts/debian-root.sh: debootstrap, then libvirt's
# Build-Depends from trixie's Sources index) so that the binaries link
# against trixie's libraries, from a tree of its own, build/deb-trixie/libvirt:
# the orig tarball, Debian's own patches of that upload (its debian.tar.xz
# is downloadable for trixie, unlike its .dsc; it carries security fixes
# that a rebuild must not drop), then patches/*.patch.  Output in
# build/debs-trixie/.
set -euo pipefail
. "$(dirname "$0")/common.sh"

DEB_TARGET=${1:-bookworm}
DEB_REV=${DEB_REV:-1}
DEB_MAINTAINER="libvirt-tunnel maintainers <maintainers@users.noreply.r-seed-57860e92.example>"
case $DEB_TARGET in
bookworm)
    DEB_BASE=11.3.0-2~bpo12+1
    DEB_SUITE=bookworm-backports
    DEB_SRC=$SRC_DIR            # make tree's
    DEB_ROOT=""                 # this machine
    OBJ=$BUILD_DIR/obj-deb
    STAGE=$BUILD_DIR/deb/root
    WORK=$BUILD_DIR/deb/work
    OUT=$BUILD_DIR/debs
    DEB_CACHE=$CACHE_DIR/debs
    ;;
trixie)
    DEB_BASE=${DEB_BASE:-11.3.0-3+deb13u3}
    DEB_SUITE=trixie
    DEB_SRC=$BUILD_DIR/deb-trixie/libvirt
    DEB_ROOT=""                 # set below: scripts/debian-root.sh's build root
    OBJ=$BUILD_DIR/deb-trixie/obj
    STAGE=$BUILD_DIR/deb-trixie/root
    WORK=$BUILD_DIR/deb-trixie/work
    OUT=$BUILD_DIR/debs-trixie
    DEB_CACHE=$CACHE_DIR/debs-trixie
    ;;
*) die "deb.sh: unknown target $DEB_TARGET (bookworm or trixie)" ;;
esac
DEB_VERSION=$DEB_BASE+tunnel$DEB_REV
DL=$CACHE_DIR/debian-$DEB_BASE

# Non-ELF files the series changes, as Debian ships them.  Anything else
# that differs from Debian's means our configuration drifted from theirs.
DEB_EXPECTED='^/(etc/libvirt/libvirtd\.conf|usr/include/libvirt/libvirt-domain\.h|usr/share/augeas/lenses/(tests/test_)?libvirtd\.aug|usr/share/libvirt/schemas/capability\.rng|usr/share/libvirt/api/libvirt-api\.xml|usr/share/systemtap/tapset/libvirt_functions\.stp|usr/share/man/man1/virsh\.1\.gz|usr/share/doc/libvirt-(common|doc)/NEWS\.gz|usr/share/doc/libvirt-doc/html/(news|migration|formatcaps|manpages/virsh|html/libvirt-libvirt-domain|kbase/internals/rpc)\.html)$'

# Files Debian changes itself (its patches, its packaging): they stay Debian's.
DEB_KEEP='^/(usr/lib/libvirt/libvirt-guests\.sh|usr/share/man/man8/libvirt-guests\.8\.gz|etc/apparmor\.d/abstractions/libvirt-(lxc|qemu)|usr/lib/systemd/system/libvirtd\.service|usr/share/doc/libvirt-doc/html/manpages/libvirt-guests\.html|usr/share/.*\.png)$'

command -v dpkg-buildflags >/dev/null || die "dpkg-dev is missing; run 'make deps'"

# Run a build command where the packages are built: on this machine, or
# in the trixie build root with the clone and ccache mounted at their paths.
inbuild() {
    if [ -z "$DEB_ROOT" ]; then
        "$@"
        return
    fi
    BINDS="$TOP $CCACHE_DIR $DL" inroot "$DEB_ROOT" env CCACHE_DIR="$CCACHE_DIR" \
        CCACHE_BASEDIR="$CCACHE_BASEDIR" CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE="$CCACHE_MAXSIZE" \
        CCACHE_SLOPPINESS="$CCACHE_SLOPPINESS" "$@"
}

# --- 1. Debian's binary packages -------------------------------------------
apt_src_opts() {
    local a=$CACHE_DIR/apt
    echo -o Dir::Etc::SourceList="$a/sources.list" -o Dir::Etc::SourceParts=/dev/null \
         -o Dir::State::Lists="$a/lists" -o Dir::Cache="$a/cache" -o Dir::State::status=/dev/null
}
# The Sources index entry of source libvirt (bookworm-backports: fetch-source.sh's
# private deb-src lists; trixie: the build root's).
showsrc() {
    if [ -n "$DEB_ROOT" ]; then
        inroot "$DEB_ROOT" apt-cache showsrc libvirt
    else
        [ -f "$CACHE_DIR/apt/sources.list" ] || "$TOP/scripts/fetch-source.sh" >/dev/null
        # shellcheck disable=SC2046
        apt-cache $(apt_src_opts) showsrc libvirt
    fi | awk -v v="$DEB_BASE" '/^Package:/ {p = 0} $1 == "Version:" {p = ($2 == v)} p'
}
download_debian() {
    mkdir -p "$DL"
    [ -f "$DL/.complete" ] && return 0
    local pkgs
    mapfile -t pkgs < <(showsrc | awk '/^Package-List:/ {l = 1; next} l && /^ / {print $1; next} l {l = 0}')
    [ ${#pkgs[@]} -gt 0 ] || die "the Sources index has no libvirt $DEB_BASE; run 'make source' (deb-src $DEB_SUITE)"
    local want=()
    # shellcheck disable=SC2016
    mapfile -t want < <(inbuild bash -c 'for p in "$@"; do
            apt-cache show "$p=$0" >/dev/null 2>&1 && echo "$p=$0"; done; true' "$DEB_BASE" "${pkgs[@]}")
    [ ${#want[@]} -gt 30 ] || die "only ${#want[@]} of Debian's libvirt $DEB_BASE packages are in apt's lists; run 'make deps' (adds $DEB_SUITE)"
    msg "download ${#want[@]} Debian packages of libvirt $DEB_BASE"
    rm -f "$DL"/*.deb
    # shellcheck disable=SC2016
    inbuild timeout 600 bash -c 'cd "$0" && apt-get download -q "$@"' "$DL" "${want[@]}" > "$DL/download.log" 2>&1 || {
        tail -5 "$DL/download.log" >&2; die "downloading Debian's libvirt packages failed"; }
    touch "$DL/.complete"
}

# --- the trixie tree: orig tarball + Debian's patches + the series ---------
# Debian's debian.tar.xz of $DEB_BASE, checked against the Sources index
# (which apt verified through the Release file's signature).
debian_tarball() {
    local f sum out=$CACHE_DIR/debian-$DEB_BASE-source
    f=libvirt_${DEB_BASE}.debian.tar.xz
    sum=$(showsrc | awk -v f="$f" '/^Checksums-Sha256:/ {c = 1; next} c && /^ / && $3 == f {print $1; exit} c && !/^ / {c = 0}')
    [ -n "$sum" ] || die "the Sources index of libvirt $DEB_BASE names no $f"
    if ! { [ -f "$out/$f" ] && echo "$sum  $out/$f" | sha256sum -c --status; }; then
        mkdir -p "$out"
        rm -f "$out/$f"
        local dir
        dir=$(showsrc | awk '$1 == "Directory:" {print $2; exit}')
        msg "download Debian's $f" >&2
        timeout 300 /usr/lib/apt/apt-helper download-file \
            "http://deb.debian.org/debian/$dir/$f" "$out/$f" "SHA256:$sum" > "$out/download.log" 2>&1 || {
            tail -5 "$out/download.log" >&2; die "downloading Debian's $f failed (checksum or network)"; }
    fi
    echo "$out/$f"
}
prepare_tree() {
    local tarball debtar stamp=$DEB_SRC.stamp want
    tarball=$("$TOP/scripts/fetch-source.sh")
    debtar=$(debian_tarball)
    want="$(lv_series_hash) $(sha256sum < "$debtar" | cut -c1-16)"
    if [ -d "$DEB_SRC/.git" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
       [ -z "$(git -C "$DEB_SRC" status --porcelain --untracked-files=no)" ]; then
        return 0
    fi
    msg "tree: $DEB_SRC = $LV_TARBALL + Debian's $DEB_BASE patches + patches/"
    rm -rf "$DEB_SRC" "$stamp" "$DEB_SRC.debian"
    mkdir -p "$DEB_SRC" "$DEB_SRC.debian"
    tar -xJf "$tarball" -C "$DEB_SRC" --strip-components=1
    tar -xJf "$debtar" -C "$DEB_SRC.debian" debian/patches
    (
        cd "$DEB_SRC"
        lv_git_identity
        export GIT_AUTHOR_DATE="2025-05-01T00:00:00Z" GIT_COMMITTER_DATE="2025-05-01T00:00:00Z"
        git init -q -b main
        echo "/$KEYCODEMAPDB/" >> .git/info/exclude
        git add -A -f -- . ":!$KEYCODEMAPDB"
        git commit -q -m "libvirt $LV_VERSION (pristine, from $LV_TARBALL)"
        git tag v11.3.0
        local p n=0
        while read -r p _; do
            case $p in ''|'#'*) continue ;; esac
            git apply --index "$DEB_SRC.debian/debian/patches/$p" ||
                die "Debian's patch $p does not apply to $LV_TARBALL"
            n=$((n + 1))
        done < "$DEB_SRC.debian/debian/patches/series"
        git commit -q -m "Debian's $n patches of libvirt $DEB_BASE (debian/patches/series)"
        git tag debian
        unset GIT_AUTHOR_DATE GIT_COMMITTER_DATE
        : > "$DEB_SRC.fuzz"
        for p in "$PATCH_DIR"/*.patch; do
            if ! git am -q --committer-date-is-author-date "$p" > /dev/null 2>&1; then
                # Debian's patches moved its context: apply with less of it.
                git am --abort >/dev/null 2>&1 || true
                git am -q -C1 --committer-date-is-author-date "$p" || {
                    git am --abort >/dev/null 2>&1 || true
                    die "patch $(basename "$p") does not apply over Debian's $DEB_BASE patches"; }
                basename "$p" >> "$DEB_SRC.fuzz"
            fi
        done
    )
    echo "$want" > "$stamp"
}

# --- 2. the patched tree, configured as Debian configures it ---------------
deb_meson_opts() {
    local multiarch
    multiarch=$(inbuild dpkg-architecture -qDEB_HOST_MULTIARCH)
    MESON_OPTS=(
        --native-file="$TOP/scripts/meson-native.ini"
        --prefix=/usr --libdir="lib/$multiarch" --libexecdir=lib/libvirt
        --sysconfdir=/etc --localstatedir=/var
        -Dbuildtype=plain -Dauto_features=disabled -Dsystem=false -Dno_git=true
        -Drunstatedir=/run -Dinitconfdir=/etc/default -Dinit_script=systemd
        -Ddocdir=/usr/share/doc/libvirt-doc
        -Dpackager=libvirt-tunnel -Dpackager_version="$DEB_VERSION"
        -Dtests=disabled -Ddocs=enabled -Dnls=enabled -Dgit_werror=disabled
        # what Debian's virsh -V lists:
        #  Hypervisors: QEMU/KVM LXC LibXL OpenVZ VMware VirtualBox ESX Test
        -Ddriver_qemu=enabled -Dqemu_user=libvirt-qemu -Dqemu_group=libvirt-qemu
        -Dqemu_moddir="/usr/lib/$multiarch/qemu" -Dqemu_datadir=/usr/share/qemu
        -Ddriver_lxc=enabled -Ddriver_libxl=enabled -Ddriver_openvz=enabled
        -Ddriver_vmware=enabled -Ddriver_vbox=enabled -Ddriver_esx=enabled -Dcurl=enabled
        -Ddriver_test=enabled
        #  Networking: Remote Network Bridging Interface udev Nwfilter
        -Ddriver_remote=enabled -Ddriver_libvirtd=enabled -Dremote_default_mode=legacy
        -Ddriver_network=enabled -Ddriver_interface=enabled -Dudev=enabled
        -Dfirewalld=enabled -Dfirewalld_zone=enabled
        -Dfirewall_backend_priority=iptables,nftables
        #  Storage: Dir Disk Filesystem SCSI Multipath iSCSI iSCSI-direct LVM RBD Gluster ZFS
        -Dstorage_dir=enabled -Dstorage_disk=enabled -Dstorage_fs=enabled
        -Dstorage_scsi=enabled -Dstorage_mpath=enabled -Dstorage_iscsi=enabled
        -Dstorage_iscsi_direct=enabled -Dlibiscsi=enabled -Dstorage_lvm=enabled
        -Dstorage_rbd=enabled -Dstorage_gluster=enabled -Dglusterfs=enabled
        -Dstorage_zfs=enabled
        #  Miscellaneous: Daemon Nodedev AppArmor SELinux Secrets Debug DTrace Readline
        -Ddriver_secrets=enabled -Dapparmor=enabled -Dsecdriver_apparmor=enabled
        -Dapparmor_profiles=enabled -Dselinux=enabled -Dsecdriver_selinux=enabled
        -Dselinux_mount=/sys/fs/selinux
        -Ddtrace=enabled -Dreadline=enabled
        # libraries and extras Debian's packages carry
        -Dattr=enabled -Daudit=enabled -Dbash_completion=enabled -Dblkid=enabled
        -Dcapng=enabled -Dfuse=enabled -Djson_c=enabled -Dlibnl=enabled
        -Dlibpcap=enabled -Dlibssh=enabled -Dlibssh2=enabled -Dnumactl=enabled
        -Dnumad=enabled -Dpciaccess=enabled -Dpolkit=enabled -Dsanlock=enabled
        -Dsasl=enabled -Dwireshark_dissector=enabled -Dnss=enabled
        -Dlogin_shell=enabled -Dssh_proxy=enabled -Dhost_validate=enabled
        -Dsysctl_config=enabled -Duserfaultfd_sysctl=enabled
        -Dchrdev_lock_files=/var/lock
        -Dloader_nvram=/usr/share/OVMF/OVMF_CODE.fd:/usr/share/OVMF/OVMF_VARS.fd:/usr/share/OVMF/OVMF_CODE.secboot.fd:/usr/share/OVMF/OVMF_VARS.fd:/usr/share/AAVMF/AAVMF_CODE.fd:/usr/share/AAVMF/AAVMF_VARS.fd:/usr/share/AAVMF/AAVMF32_CODE.fd:/usr/share/AAVMF/AAVMF32_VARS.fd
    )
}
build_stage() {
    deb_meson_opts
    # Debian's hardening and optimisation flags, without the build path
    # maps that only make sense inside dpkg-buildpackage, and without -g:
    # the packages get stripped binaries (strip_elf) and no -dbgsym
    # packages, so debug info would only make a cold build slower.
    local cflags cppflags ldflags
    cflags=$(inbuild env DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS |
             sed 's/-ffile-prefix-map=[^ ]*//g; s/\(^\| \)-g\( \|$\)/ /g')
    cppflags=$(inbuild env DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS)
    ldflags=$(inbuild env DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS)
    local stamp="$OBJ/.deb-options"
    local want
    want=$(printf '%s\n' "${MESON_OPTS[@]}" "$cflags" "$cppflags" "$ldflags" | sha256sum | cut -d' ' -f1)
    if [ ! -f "$OBJ/build.ninja" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        rm -rf "$OBJ"
        msg "configure $(basename "$OBJ") (Debian's $DEB_SUITE configuration)"
        inbuild env CFLAGS="$cflags $cppflags" LDFLAGS="$ldflags" \
            meson setup "$OBJ" "$DEB_SRC" "${MESON_OPTS[@]}" > "$OBJ.configure.log" 2>&1 || {
            tail -30 "$OBJ.configure.log" >&2; die "meson setup failed (full log: $OBJ.configure.log)"; }
        echo "$want" > "$stamp"
    fi
    msg "build $(basename "$OBJ")${DEB_ROOT:+ in the $DEB_SUITE build root}"
    LV_RUN=inbuild lv_ninja "$OBJ" "$(basename "$OBJ")"
    rm -rf "$STAGE"
    inbuild env DESTDIR="$STAGE" meson install -C "$OBJ" --quiet --no-rebuild > "$OBJ.install.log" 2>&1 || {
        tail -20 "$OBJ.install.log" >&2; die "staging install failed"; }
}

# --- 3. and 4. repack ------------------------------------------------------
is_elf() { [ "$(head -c4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }
strip_elf() {  # as dh_strip does (with the binutils of the build)
    case $1 in
    *.so|*.so.*) inbuild strip --remove-section=.comment --remove-section=.note --strip-unneeded "$1" ;;
    *) inbuild strip --remove-section=.comment --remove-section=.note "$1" ;;
    esac
}
# The file the staging root has for Debian's path $1, or nothing.
stage_file() {
    local p=$1
    if [ -f "$STAGE$p" ] && [ ! -L "$STAGE$p" ]; then echo "$STAGE$p"; return; fi
    case $p in
    /usr/share/man/*.gz)
        [ -f "$STAGE${p%.gz}" ] && echo "$STAGE${p%.gz}" ;;
    /usr/share/doc/*/NEWS.gz)
        echo "$DEB_SRC/NEWS.rst" ;;
    esac
}
changelog_entry() {
    local when
    when=$(date -R -d "@$(git -C "$TOP" log -1 --format=%ct 2>/dev/null || date +%s)")
    cat <<EOF
libvirt ($DEB_VERSION) $DEB_SUITE; urgency=medium

  * Rebuild of Debian's libvirt $DEB_BASE with the libvirt-tunnel series
    ($NPATCHES patches on v$LV_VERSION): tunnelled live migration carries
    post-copy, storage (NBD) and post-copy recovery through the libvirtd
    connection; 'virsh capabilities' lists them under
    <migration_features><tunnelled>.  Debian's packaging, configuration
    and maintainer scripts are unchanged.$([ -z "$DEB_ROOT" ] ||
    printf "\n  * Debian's own patches of %s (debian/patches) are applied first." "$DEB_BASE")

 -- $DEB_MAINTAINER  $when

EOF
}
repack() {  # repack DEB
    local deb=$1 name dir
    name=$(dpkg-deb -f "$deb" Package)
    dir=$WORK/$name
    rm -rf "$dir"
    dpkg-deb -R "$deb" "$dir"
    local f rel src n_elf=0 n_other=0 delta=0
    while IFS= read -r -d '' f; do
        rel=${f#"$dir"}
        if is_elf "$f"; then
            [ -f "$STAGE$rel" ] || die "$name: Debian ships $rel, our build has no such file (configuration mismatch)"
            delta=$((delta - $(stat -c %s "$f")))
            cp "$f" "$WORK/.debian-elf"
            cp "$STAGE$rel" "$f"
            strip_elf "$f"
            delta=$((delta + $(stat -c %s "$f")))
            # Text in Debian's binary that ours lacks: what Debian's own
            # source patches (unavailable here) change, or the series removes.
            comm -23 <(strings -n 8 "$WORK/.debian-elf" | grep -E '[A-Za-z]{4}' | grep -E '[-_/ %]' |
                       grep -vE '\.debug$|^\.gnu_debug|/usr/lib/debug/|^\.\./\.\./|^/build/reproducible-path/|^libvirt version: |/lib64/ld-linux-x86-64\.so\.2$' | sort -u) \
                     <(strings -n 8 "$f" | sort -u) | sed "s|^|$name $rel: |" >> "$WORK/strings"
            n_elf=$((n_elf + 1))
            echo "$name $rel ELF" >> "$WORK/replaced"
            continue
        fi
        src=$(stage_file "$rel")
        [ -n "$src" ] || continue
        local tmp=$WORK/.cmp
        case $rel in
        *.gz) if [ "$src" = "${src%.gz}" ]; then gzip -9n < "$src" > "$tmp.gz"; else cp "$src" "$tmp.gz"; fi
              cmp -s <(gzip -dc "$f") <(gzip -dc "$tmp.gz") && continue ;;
        *.html) # the build date in the footer is not a difference
              cmp -s <(grep -v 'This page was generated at' "$f") \
                     <(grep -v 'This page was generated at' "$src") && continue
              cp "$src" "$tmp.gz" ;;
        *)    cmp -s "$f" "$src" && continue; cp "$src" "$tmp.gz" ;;
        esac
        if [[ $rel =~ $DEB_KEEP ]]; then
            echo "$name $rel kept" >> "$WORK/replaced"
            continue
        fi
        if ! [[ $rel =~ $DEB_EXPECTED ]]; then
            diff -u <(case $rel in *.gz) gzip -dc "$f";; *) cat "$f";; esac) \
                    <(case $rel in *.gz) gzip -dc "$tmp.gz";; *) cat "$tmp.gz";; esac) \
                    >> "$(dirname "$WORK")/drift.diff" || true
            echo "$name: $rel" >> "$WORK/drift"
            continue
        fi
        delta=$((delta - $(stat -c %s "$f")))
        cat "$tmp.gz" > "$f"
        delta=$((delta + $(stat -c %s "$f")))
        n_other=$((n_other + 1))
        echo "$name $rel changed" >> "$WORK/replaced"
    done < <(find "$dir" -path "$dir/DEBIAN" -prune -o -type f -print0)

    # A changelog entry where the package has its own changelog.
    local cl=$dir/usr/share/doc/$name/changelog.Debian.gz
    if [ -f "$cl" ] && [ ! -L "$cl" ]; then
        delta=$((delta - $(stat -c %s "$cl")))
        { changelog_entry; gzip -dc "$cl"; } | gzip -9n > "$cl.new"
        mv "$cl.new" "$cl"
        delta=$((delta + $(stat -c %s "$cl")))
    fi

    # Version, the exact-version relations between the packages, size, md5sums.
    local ctl=$dir/DEBIAN/control size
    OLD=$DEB_BASE NEW=$DEB_VERSION perl -pi -e '
        s/^Version: .*/Version: $ENV{NEW}/;
        s/\((\s*[<>=]+\s*)\Q$ENV{OLD}\E\)/($1$ENV{NEW})/g
            if /^(Pre-)?Depends|^Recommends|^Suggests|^Breaks|^Conflicts|^Replaces|^Provides|^Enhances/;' "$ctl"
    if grep -v '^Version:' "$ctl" | grep -qF "$DEB_BASE)"; then
        die "$name: control still names $DEB_BASE: $(grep -F "$DEB_BASE)" "$ctl")"
    fi
    # Debian's Installed-Size, changed by what we changed.
    size=$(( $(sed -n 's/^Installed-Size: //p' "$ctl") + (delta + 1023) / 1024 ))
    sed -i "s/^Installed-Size: .*/Installed-Size: $size/" "$ctl"
    # Bug reports go to us, not to Debian.
    sed -i "s/^Maintainer: \(.*\)/Maintainer: $DEB_MAINTAINER\nOriginal-Maintainer: \1/" "$ctl"
    # md5sums as dh_md5sums writes them: without the conffiles.
    (cd "$dir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
        xargs -0 -r md5sum > DEBIAN/md5sums)
    if [ -f "$dir/DEBIAN/conffiles" ]; then
        awk 'NR == FNR {conf[substr($0, 2)] = 1; next} !($2 in conf)' \
            "$dir/DEBIAN/conffiles" "$dir/DEBIAN/md5sums" > "$dir/DEBIAN/md5sums.new"
        mv "$dir/DEBIAN/md5sums.new" "$dir/DEBIAN/md5sums"
    fi
    [ -s "$dir/DEBIAN/md5sums" ] || rm -f "$dir/DEBIAN/md5sums"
    local arch
    arch=$(dpkg-deb -f "$deb" Architecture)
    # xz at its fastest level: a fifth of the time of the default, 1.6x the size
    dpkg-deb -Zxz -z1 -b "$dir" "$OUT/${name}_${DEB_VERSION}_$arch.deb" > /dev/null
    printf '%-44s %3d ELF  %2d other\n' "$name" "$n_elf" "$n_other" >> "$OUT/SUMMARY"
}

NPATCHES=$(find "$PATCH_DIR" -maxdepth 1 -name '*.patch' | wc -l)

if [ "$DEB_TARGET" = trixie ]; then
    . "$TOP/scripts/debian-root.sh"   # inroot
    DEB_ROOT=$("$TOP/scripts/debian-root.sh" "$DEB_SUITE" build "$DEB_BASE")
    prepare_tree
else
    [ -d "$SRC_DIR/.git" ] || die "no tree at $SRC_DIR; run 'make tree'"
fi

# Packages are a function of the tree and this script (and of the build
# root's packages): a clean clone reuses what an earlier run built from the
# same ones (outside the clone, like the tarball and ccache), unless
# DEB_REBUILD is set.
key=""
if [ -z "$(git -C "$DEB_SRC" status --porcelain --untracked-files=no)" ]; then
    key=$({ git -C "$DEB_SRC" rev-parse 'HEAD^{tree}'; sha256sum < "$0"; echo "$DEB_VERSION"
            [ -z "$DEB_ROOT" ] || sha256sum < "$DEB_ROOT/var/lib/dpkg/status"; } |
          sha256sum | cut -c1-16)
fi
if [ -n "$key" ] && [ -z "${DEB_REBUILD:-}" ] && [ -f "$DEB_CACHE/$key/SUMMARY" ]; then
    rm -rf "$OUT"
    cp -a "$DEB_CACHE/$key" "$OUT"
    download_debian
    msg "reused the packages of this tree and script ($DEB_CACHE/$key; DEB_REBUILD=1 builds them again)"
    exit 0
fi

download_debian
build_stage
# Built aside, moved into place only once everything is checked: a failed
# run leaves no packages behind.
FINAL=$OUT
OUT=$(dirname "$WORK")/out
rm -rf "$WORK" "$OUT" "$FINAL"
mkdir -p "$WORK" "$OUT"
: > "$WORK/replaced"
: > "$WORK/strings"
rm -f "$(dirname "$WORK")/drift.diff"
msg "repack Debian's packages as $DEB_VERSION"
{
    echo "libvirt $DEB_VERSION: Debian's $DEB_BASE packages rebuilt with $NPATCHES patches"
    if [ -n "$DEB_ROOT" ]; then
        echo "built in a $DEB_SUITE root ($(inbuild gcc --version | head -1)) from the orig tarball"
        echo "+ $(git -C "$DEB_SRC" log -1 --format=%s debian)"
        [ ! -s "$DEB_SRC.fuzz" ] ||
            echo "+ the series; applied with one line of context over Debian's patches: $(tr '\n' ' ' < "$DEB_SRC.fuzz")"
    fi
    echo
} > "$OUT/SUMMARY"
for deb in "$DL"/*.deb; do
    repack "$deb"
done
if [ -s "$WORK/drift" ]; then
    sed 's/^/  /' "$WORK/drift" >&2
    die "(diffs in $(dirname "$WORK")/drift.diff) these files differ from Debian's and the series does not change them: the configuration drifted from Debian's"
fi
{
    echo
    echo "non-ELF files the series changes:"
    grep ' changed$' "$WORK/replaced" | sed 's/ changed$//; s/^/  /'
    echo
    echo "files Debian changes itself, kept as Debian ships them:"
    grep ' kept$' "$WORK/replaced" | sed 's/ kept$//; s/^/  /'
    echo
    echo "text in Debian's binaries that ours lack (Debian's source patches, or what the series removes):"
    sed 's/^/  /' "$WORK/strings"
} >> "$OUT/SUMMARY"
# Same packages, same file layout as Debian's.
for deb in "$DL"/*.deb; do
    name=$(dpkg-deb -f "$deb" Package)
    arch=$(dpkg-deb -f "$deb" Architecture)
    ours=$OUT/${name}_${DEB_VERSION}_$arch.deb
    [ -f "$ours" ] || die "$name: no package built"
    if ! diff <(dpkg-deb -c "$deb" | awk '{print $1, $2, $6}' | sort) \
              <(dpkg-deb -c "$ours" | awk '{print $1, $2, $6}' | sort) > "$WORK/layout.diff"; then
        head -20 "$WORK/layout.diff" >&2
        die "$name: the file list, modes or owners differ from Debian's"
    fi
done
# Our version sorts above Debian's, satisfies every versioned dependency
# between the packages (the arch-all packages' "<< BASE.1~" bounds) and
# none of their Breaks.
dpkg --compare-versions "$DEB_VERSION" gt "$DEB_BASE" || die "$DEB_VERSION does not sort above $DEB_BASE"
for deb in "$OUT"/*.deb; do
    for field in Pre-Depends Depends Recommends Breaks; do
        dpkg-deb -f "$deb" "$field" |
            { grep -oE 'libvirt[a-z0-9-]* \((<<|<=|>=|=|>>) [^)]*\)' || true; } | tr -d '()' |
            while read -r dep op v; do
                if dpkg --compare-versions "$DEB_VERSION" "$op" "$v"; then
                    [ "$field" != Breaks ] && continue
                elif [ "$field" = Breaks ]; then
                    continue
                fi
                die "$(dpkg-deb -f "$deb" Package): $field: $dep ($op $v) and $DEB_VERSION"
            done
    done
done
# A flat repository index, so hosts can install with apt from this directory.
echo "$DEB_BASE" > "$OUT/debian-base"   # for the lab: which Debian packages these replace
(cd "$OUT" && dpkg-scanpackages -m . /dev/null 2>/dev/null | gzip -9n > Packages.gz)
rm -rf "$WORK"
mv "$OUT" "$FINAL"
if [ -n "$key" ]; then
    rm -rf "$DEB_CACHE"   # only the latest: about 9 MiB
    mkdir -p "$DEB_CACHE"
    cp -a "$FINAL" "$DEB_CACHE/$key"
fi
n=$(find "$FINAL" -name '*.deb' | wc -l)
msg "$n packages in $FINAL (see $FINAL/SUMMARY)"
