from __future__ import annotations

from frakti_install import plans, session
from frakti_install.engine import Status
from frakti_install.steps.proxy import drop_in
from tests.unit.simhost import frakti


def run(m, **settings):
    report = session.execute(
        plans.allinone(frakti()), m.context(m.settings(**settings)), dry_run=False
    )
    session.raise_for(report)
    return {r.name: r for r in report.steps}


def test_no_proxy_means_no_drop_ins(machine):
    m = machine()
    steps = run(m)
    assert steps["proxy"].status is Status.SKIP
    assert not m.p(drop_in("docker.service")).exists()


def test_proxy_reaches_docker_hyperd_kubelet_with_cluster_in_no_proxy(machine):
    m = machine()
    run(m, http_proxy="http://user:pw@proxy:3128", no_proxy="corp.example")
    for unit in ("docker.service", "hyperd.service", "kubelet.service"):
        text = m.p(drop_in(unit)).read_text()
        assert 'Environment="HTTP_PROXY=http://user:pw@proxy:3128"' in text
        assert (
            'Environment="NO_PROXY=corp.example,localhost,127.0.0.1,10.244.0.0/16,10.96.0.0/12"'
            in text
        )
        assert m.p(drop_in(unit)).stat().st_mode & 0o777 == 0o640


def test_proxy_change_restarts_only_running_daemons_then_removal(machine):
    m = machine()
    run(m)
    starts = {u: s.starts for u, s in m.state.units.items()}
    steps = run(m, https_proxy="http://proxy:3128")
    assert steps["proxy"].status is Status.CHANGE
    assert "restart docker.service (proxy changed): systemctl restart docker.service" in (
        steps["proxy"].changes
    )
    after = {u: s.starts for u, s in m.state.units.items()}
    assert after["docker.service"] == starts["docker.service"] + 1
    assert after["frakti.service"] == starts["frakti.service"]
    steps = run(m)  # proxy gone again: our drop-ins go too
    assert "remove /etc/systemd/system/docker.service.d/http-proxy.conf" in steps["proxy"].changes
    assert not m.p(drop_in("docker.service")).exists()


def test_proxy_settings_come_from_the_environment(tmp_path):
    from frakti_install import config

    settings = config.load(None, {}, environ={"https_proxy": "http://p:1", "NO_PROXY": "a"})
    assert (settings.https_proxy, settings.no_proxy) == ("http://p:1", "a")
