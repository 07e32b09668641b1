"""SSH signatures through OpenSSH's ``ssh-keygen -Y`` (SSHSIG), as git does.

Signing with ``-f`` naming a private key, or a public key whose private half
is in ssh-agent (hardware keys included), works exactly as for git. We never
parse or re-implement signatures: ``ssh-keygen`` signs and verifies, always
with an explicit namespace (``-n``).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from cleanup.errors import SignoffError, UsageError

NS_PLAN = "cleanup-plan"
NS_WITNESS = "cleanup-witness"


def ssh_keygen() -> str:
    exe = shutil.which("ssh-keygen")
    if not exe:
        raise UsageError("ssh-keygen not found", hint="install OpenSSH (Debian: openssh-client)")
    return exe


def sign_file(path: str, key: str, namespace: str) -> str:
    """Sign ``path`` with ``key``; return the path of the detached signature (``path.sig``)."""
    if not os.path.exists(key):
        raise UsageError(f"signing key {key} does not exist",
                         hint="give a private key, or a .pub whose private key is in ssh-agent")
    sig = path + ".sig"
    if os.path.exists(sig):
        os.unlink(sig)
    proc = subprocess.run(
        [ssh_keygen(), "-Y", "sign", "-f", key, "-n", namespace, path],
        capture_output=True, text=True, timeout=120, check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0 or not os.path.exists(sig):
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise SignoffError(
            f"ssh-keygen could not sign with {key}: {msg[-1] if msg else 'no output'}",
            hint="an encrypted key must be loaded into ssh-agent (ssh-add) and given as its .pub",
        )
    return sig


def public_key_of(key: str) -> str:
    """The OpenSSH public key line for ``key`` (a .pub is read; a private key is derived)."""
    if key.endswith(".pub"):
        with open(key, encoding="utf-8") as fh:
            return fh.read().strip()
    pub = key + ".pub"
    if os.path.exists(pub):
        with open(pub, encoding="utf-8") as fh:
            return fh.read().strip()
    proc = subprocess.run([ssh_keygen(), "-y", "-f", key], capture_output=True, text=True,
                          timeout=30, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise UsageError(f"cannot read the public key of {key}: {proc.stderr.strip()}")
    return proc.stdout.strip()
