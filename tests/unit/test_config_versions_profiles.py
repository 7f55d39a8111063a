from __future__ import annotations

from pathlib import Path

import pytest

from frakti_install import config, profiles, runtimes, versions
from frakti_install.errors import ConfigError, IncompatibleVersions, UnsupportedOS
from frakti_install.steps.node import taints_kubeadm_sets


def load(tmp_path: Path, yaml_text: str = "", env=None, **flags):
    path = None
    if yaml_text:
        path = tmp_path / "frakti.yaml"
        path.write_text(yaml_text)
    return runtimes.load_settings(path, flags, environ=env or {})


def test_defaults(tmp_path):
    s = load(tmp_path)
    # upstream's cluster CIDR; the node's /24 is the one the cluster allocates
    assert (s.pod_cidr, s.node_subnet) == ("10.244.0.0/16", "auto")
    assert s.versions.frakti == "v1.12.0" and s.versions.kubernetes == "v1.12.10"


def test_layers_file_env_flags(tmp_path):
    s = load(
        tmp_path,
        "node_subnet: 10.244.2.0/24\nmirrors: {github: 'http://m/gh'}\n",
        env={"FRAKTI_INSTALL_NODE_SUBNET": "10.244.3.0/24"},
        mirrors={"kubernetes": "http://m/k8s"},
    )
    assert s.node_subnet == "10.244.3.0/24"
    assert s.mirrors == {"github": "http://m/gh", "kubernetes": "http://m/k8s"}
    assert (
        load(
            tmp_path,
            env={"FRAKTI_INSTALL_NODE_SUBNET": "10.244.3.0/24"},
            node_subnet="10.244.4.0/24",
        ).node_subnet
        == "10.244.4.0/24"
    )


@pytest.mark.parametrize(
    "flags,message",
    [
        ({"pod_cidr": "10.244.0.1/16"}, "--pod-cidr: '10.244.0.1/16' is not an IPv4 network"),
        ({"node_subnet": "10.245.1.0/24"}, "not inside pod_cidr"),
        ({"service_cidr": "10.240.0.0/12"}, "overlaps pod_cidr 10.244.0.0/16"),
        ({"cgroup_driver": "cgroup"}, "is not one of auto, cgroupfs, systemd"),
        ({"mirrors": {"dockerhub": "http://x"}}, "--mirror: 'dockerhub' is not a mirror kind"),
        ({"mirrors": {"github": "ftp://x"}}, "--mirror: 'ftp://x' must be an http(s):// URL"),
        ({"checksums": {"frakti": "abc"}}, "the sha256 for frakti is not 64 hex digits"),
        ({"checksums": {"frak": "a" * 64}}, "--checksum: 'frak' is not an artifact"),
        ({"version_set": "1.5"}, "--version-set: '1.5' is not a known version set"),
    ],
)
def test_bad_values_are_refused_with_reason(tmp_path, flags, message):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **flags)
    assert message in str(info.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting.*pod_cdir"):
        load(tmp_path, "pod_cdir: 10.0.0.0/8\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(tmp_path, "pod_cidr: [\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(tmp_path / "missing.yaml", {}, environ={})


def test_parse_pairs():
    assert config.parse_pairs(["a=1,b=2", "c=3"], "mirror") == {"a": "1", "b": "2", "c": "3"}
    with pytest.raises(ConfigError, match="expected NAME=VALUE"):
        config.parse_pairs(["nope"], "mirror")


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"kubernetes": "v1.11.10"}, "works with Kubernetes 1.12.x only"),
        ({"hyperd": "1.0.0"}, "needs hyperd >= 1.1.0"),
        ({"kubernetes": "v1.26.0", "frakti": "v1.26.0"}, "speaks only CRI v1"),
        ({"frakti": "v0.2.0"}, "not in the compatibility table"),
    ],
)
def test_incompatible_versions_refused(overrides, message):
    with pytest.raises(IncompatibleVersions, match=message):
        versions.resolve("1.12", **overrides)


def test_a_minor_is_refused_where_the_profile_installs_exact_releases():
    with pytest.raises(ConfigError, match="--kubernetes-version 'v1.12' is a minor"):
        versions.resolve("1.12", kubernetes="v1.12")


def test_every_version_set_is_compatible():
    for name in versions.known_sets():
        versions.resolve(name)


@pytest.mark.parametrize("name", ["1.9", "1.10"])
def test_removed_pre_1_11_sets_say_why(name):
    # kubeadm/kubelet <= 1.10 need the old kubelet drop-in and have no `kubeadm reset -f`
    # (kubernetes/release rpm/kubelet.spec and debian/ of the time): such a row cannot work
    with pytest.raises(ConfigError) as info:
        versions.resolve(name)
    assert f"version set {name!r} was removed" in info.value.message
    assert "drop-in" in info.value.message and "reset" in info.value.message
    assert "use 1.12" in info.value.message
    assert "Known sets: 1.12." in info.value.hint


def test_removed_1_11_set_says_no_sha256_is_published():
    # dl.k8s.io has only .sha1/.md5 beside the v1.11.x binaries (kubernetes/kubernetes#68555)
    with pytest.raises(ConfigError, match=r"'1.11' was removed: .*only \.sha1/\.md5"):
        versions.resolve("1.11")


def test_old_frakti_is_not_in_the_table():
    with pytest.raises(IncompatibleVersions, match="not in the compatibility table"):
        versions.resolve("1.12", frakti="v1.9.1", kubernetes="v1.9.11", hyperd="1.0.0")



@pytest.mark.parametrize(
    ("kubernetes", "taints"),
    [
        ("v1.12.10", ["node-role.kubernetes.io/master:NoSchedule"]),
        ("v1.23.17", ["node-role.kubernetes.io/master:NoSchedule"]),
        (
            "v1.24.0",
            [
                "node-role.kubernetes.io/master:NoSchedule",
                "node-role.kubernetes.io/control-plane:NoSchedule",
            ],
        ),
        ("v1.25.0", ["node-role.kubernetes.io/control-plane:NoSchedule"]),
        ("v1.31.13", ["node-role.kubernetes.io/control-plane:NoSchedule"]),
    ],
)
def test_the_taints_kubeadm_sets_follow_its_release(kubernetes, taints):
    assert taints_kubeadm_sets(kubernetes) == taints

@pytest.mark.parametrize(
    "os_id,version,family",
    [
        ("ubuntu", "16.04", "debian"),
        ("ubuntu", "24.04", "debian"),
        ("debian", "11", "debian"),
        ("centos", "7", "rhel"),
        ("rocky", "9.3", "rhel"),
        ("almalinux", "8.10", "rhel"),
        ("rhel", "9.4", "rhel"),
    ],
)
def test_supported_systems(os_id, version, family):
    assert profiles.identify(os_id, version).family == family


@pytest.mark.parametrize(
    "os_id,version",
    [("ubuntu", "23.10"), ("arch", ""), ("fedora", "40"), ("centos", "8"), ("debian", "10")],
)
def test_unsupported_systems_name_themselves_and_the_supported_list(os_id, version):
    info = profiles.identify(os_id, version)
    assert not info.supported and info.family is None
    with pytest.raises(UnsupportedOS) as error:
        profiles.profile_for(info)
    assert repr(os_id) in str(error.value) and "ubuntu 22.04" in str(error.value)


def test_os_differences_are_data():
    deb = profiles.profile_for(profiles.identify("debian", "12"))
    el9 = profiles.profile_for(profiles.identify("rocky", "9.3"))
    el7 = profiles.profile_for(profiles.identify("centos", "7"))
    assert (deb.kubelet_env_file, el9.kubelet_env_file) == (
        "/etc/default/kubelet",
        "/etc/sysconfig/kubelet",
    )
    assert (deb.package_manager, el7.package_manager, el9.package_manager) == ("apt", "yum", "dnf")
    assert el9.packages["docker"] == ["docker-ce", "docker-ce-cli"]
    assert el7.packages["docker"] == ["docker"]
    assert [r.name for r in el9.repos] == ["docker-ce"] and el7.repos == ()


# /etc/os-release and /etc/debian_version of Debian sid, from its base-files 14.2
SID_OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux forky/sid"
NAME="Debian GNU/Linux"
VERSION_CODENAME=forky
ID=debian
HOME_URL="https://www.debian.org/"
"""


def test_debian_sid_without_version_id_is_a_kata_system(tmp_path):
    import distro

    from frakti_install import datafiles, profiles

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text(SID_OS_RELEASE)
    (tmp_path / "etc/debian_version").write_text("forky/sid\n")
    found = distro.LinuxDistribution(include_lsb=False, include_uname=False, root_dir=str(tmp_path))
    os_info = profiles.identify(found.id(), found.version(best=False), found.name(pretty=True))
    assert (os_info.version, os_info.family) == ("forky/sid", "debian")
    kata_systems = datafiles.load("kata")["systems"]
    assert any(profiles.system_matches(s, os_info.id, os_info.version) for s in kata_systems)
    # a release of Debian with a VERSION_ID is not taken for sid
    assert not profiles.system_matches({"id": "debian", "version": "/sid", "match": "suffix"},
                                       "debian", "13")  # fmt: skip
