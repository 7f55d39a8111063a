"""Signing keys are checked for expiry as well as fingerprint: pkgs.k8s.io's
old minors served a key that expired with its fingerprint unchanged
(kubernetes/kubernetes#128609). Parsed from real `gpg --show-keys
--with-colons` output of keys made here with a faked clock."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest

from frakti_install.probes import signing_keys

gpg = shutil.which("gpg")
pytestmark = pytest.mark.skipif(gpg is None, reason="gpg is not installed")
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 2, tzinfo=UTC)


def run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    """argv, failing the test with gpg's own words when it fails."""
    done = subprocess.run(argv, capture_output=True, **kwargs)
    assert done.returncode == 0, f"{argv[3:]} exit {done.returncode}: {done.stderr!r}"
    return done


def make_key(home: Path, *, made: str, primary_expires: str, sub: str = "") -> str:
    """An exported public key generated at `made` (gpg --faked-system-time);
    `sub`: a signing subkey's expiry, when the primary key itself does not sign."""
    home.mkdir(mode=0o700)
    base = [gpg, "--batch", "--homedir", str(home), "--faked-system-time", made,
            "--passphrase", "", "--pinentry-mode", "loopback"]  # fmt: skip
    uid = "test <test@example.invalid>"
    usage = "cert" if sub else "sign,cert"
    run([*base, "--quick-gen-key", uid, "ed25519", usage, primary_expires])
    if sub:
        listing = run([*base, "--with-colons", "--list-keys"], text=True).stdout
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        run([*base, "--quick-add-key", fpr, "ed25519", "sign", sub])
    exported = run([*base, "--armor", "--export"]).stdout
    key = home / "Release.key"
    key.write_bytes(exported)
    shown = run([gpg, "--batch", "--homedir", str(home), "--show-keys", "--with-colons", str(key)],
                text=True).stdout  # fmt: skip
    # the agent this key generation started would outlive the test otherwise
    if shutil.which("gpgconf"):
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    return shown


def test_a_current_key_is_usable(tmp_path):
    keys = signing_keys(make_key(tmp_path / "g", made="20250101T000000", primary_expires="3y"))
    assert len(keys) == 1 and len(keys[0].fingerprint) == 40
    assert keys[0].problem_at(NOW) is None


def test_an_expired_primary_key_is_refused_with_its_date(tmp_path):
    keys = signing_keys(make_key(tmp_path / "g", made="20220825T000000", primary_expires="2y"))
    problem = keys[0].problem_at(NOW)
    assert problem and "expired on 2024-08-2" in problem and keys[0].fingerprint in problem


def test_a_key_whose_only_signing_subkey_expired_is_refused(tmp_path):
    colons = make_key(tmp_path / "g", made="20240101T000000", primary_expires="10y", sub="1y")
    keys = signing_keys(colons)
    assert len(keys[0].subkeys) == 1 and keys[0].subkeys[0].signs
    problem = keys[0].problem_at(NOW)
    assert problem and "no valid signing key or subkey" in problem and "2024-12-3" in problem
    # the same key judged while the subkey was valid
    assert keys[0].problem_at(datetime.datetime(2024, 6, 1, tzinfo=UTC)) is None


def test_fingerprints_are_those_of_primary_keys_only(tmp_path):
    colons = make_key(tmp_path / "g", made="20240101T000000", primary_expires="10y", sub="5y")
    primary = [line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr")][0]
    assert [key.fingerprint for key in signing_keys(colons)] == [primary.upper()]
