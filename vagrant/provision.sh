#!/usr/bin/env bash
# Vagrant provisioning for the frakti lab (see Vagrantfile and README.md here).
#
#   provision.sh master   bootstrap frakti-install, `allinone`, then write the
#                         join command to vagrant/.join (mode 600, never printed)
#   provision.sh worker   bootstrap frakti-install, wait for vagrant/.join, `node --join`
#
# Safe to run again (`vagrant provision`): every step is idempotent.
#
# Environment (the Vagrantfile sets the first two):
#   FRAKTI_LAB_HOSTS             "IP NAME" lines for /etc/hosts
#   FRAKTI_INSTALL_NODE_SUBNET   this node's pod subnet (frakti-install reads it)
#   FRAKTI_BOOTSTRAP_ARGS        where frakti-install comes from [--from-path <project>]
#   FRAKTI_JOIN_WAIT             seconds a worker waits for the master [3600]
#   FRAKTI_LAB_PROJECT           the synced checkout [/vagrant]
#   FRAKTI_LAB_BIN               the installed command [/usr/local/bin/frakti-install]
#   FRAKTI_LAB_PREPARE=0         skip the VM preparation (hosts, swap, CentOS 7 repos)
set -euo pipefail  # and never `set -x`: the join command holds a token

role=${1:-}
project=${FRAKTI_LAB_PROJECT:-/vagrant}
lab=$project/vagrant
join_file=$lab/.join
frakti=${FRAKTI_LAB_BIN:-/usr/local/bin/frakti-install}
config=$lab/lab.yaml

say() { printf '[lab %s] %s\n' "${role:-?}" "$*"; }
die() { say "error: $*" >&2; exit 1; }

case $role in
  master | worker) ;;
  *) die "usage: provision.sh master|worker" ;;
esac
[ -f "$project/bootstrap.py" ] || die "$project/bootstrap.py is missing: is the checkout synced to $project?"

# -- the VM ------------------------------------------------------------------

centos7_vault() {
  # CentOS 7 is end of life: its mirrors are gone, the packages live on in the vault.
  local repo
  for repo in /etc/yum.repos.d/CentOS-*.repo; do
    [ -f "$repo" ] || continue
    sed -i -e 's|^mirrorlist=|#mirrorlist=|' \
      -e 's|^#\s*baseurl=http://mirror\.centos\.org|baseurl=https://vault.centos.org|' \
      -e 's|^baseurl=http://mirror\.centos\.org|baseurl=https://vault.centos.org|' "$repo"
  done
}

prepare() {
  if [ -n "${FRAKTI_LAB_HOSTS:-}" ]; then
    sed -i '/^# frakti-lab begin$/,/^# frakti-lab end$/d' /etc/hosts
    printf '# frakti-lab begin\n%s\n# frakti-lab end\n' "$FRAKTI_LAB_HOSTS" >>/etc/hosts
  fi
  # kubelet refuses to run with swap on
  swapoff -a
  sed -i -E 's|^([^#].*\sswap\s.*)$|# \1  # off for kubelet (frakti lab)|' /etc/fstab
  if grep -qs 'release 7' /etc/centos-release; then
    centos7_vault
    # the bootstrap installs rh-python38 from SCL; its repo files need the vault too
    rpm -q centos-release-scl >/dev/null 2>&1 || yum install -y -q centos-release-scl
    centos7_vault
  fi
}

bootstrap() {
  local python candidate source_args
  for candidate in python3 python python2; do
    if command -v "$candidate" >/dev/null 2>&1; then
      python=$candidate
      break
    fi
  done
  [ -n "${python:-}" ] || die "no python at all on this box"
  read -r -a source_args <<<"${FRAKTI_BOOTSTRAP_ARGS:---from-path $project}"
  say "bootstrapping frakti-install (${source_args[*]})"
  "$python" "$project/bootstrap.py" "${source_args[@]}"
}

# -- the roles ---------------------------------------------------------------

master() {
  say "frakti-install allinone"
  "$frakti" allinone --yes --config "$config"

  say "writing the join command to vagrant/.join (not shown: it holds a token)"
  local tmp
  tmp=$(umask 077 && mktemp "$lab/.join.XXXXXX")
  # shellcheck disable=SC2064  # expand now: tmp is local
  trap "rm -f '$tmp'" EXIT
  if ! "$frakti" join-command >"$tmp"; then
    die "frakti-install join-command failed (it comes with the worker-node feature)"
  fi
  [ -s "$tmp" ] || die "frakti-install join-command printed nothing"
  chmod 600 "$tmp" || say "warning: cannot chmod vagrant/.join (shared folder without modes?)"
  mv -f "$tmp" "$join_file"
  trap - EXIT
}

worker() {
  local waited=0 limit=${FRAKTI_JOIN_WAIT:-3600}
  until [ -s "$join_file" ]; do
    if [ "$waited" -ge "$limit" ]; then
      die "no vagrant/.join after ${limit}s: bring the master up first (vagrant up master)"
    fi
    [ "$waited" -gt 0 ] || say "waiting for the master to write vagrant/.join"
    sleep 10
    waited=$((waited + 10))
  done
  say "frakti-install node --join <from vagrant/.join>"
  "$frakti" node --yes --config "$config" --join "$(cat "$join_file")"
}

[ "${FRAKTI_LAB_PREPARE:-1}" = 0 ] || prepare
bootstrap
"$role"
say "done"
