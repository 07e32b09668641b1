"""SSH signatures through OpenSSH's ``ssh-keygen -Y`` (SSHSIG), as git does.

Signing with ``-f`` naming a private key, or a public key whose private half
is in ssh-agent (hardware keys included), works exactly as for git. We never
parse or re-implement signatures: ``ssh-keygen`` signs and verifies, always
with an explicit namespace (``-n``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cleanup.core import signoff as so
from cleanup.core.timeutil import parse_time
from cleanup.errors import SignoffError, UsageError

NS_PLAN = "cleanup-plan"
NS_WITNESS = "cleanup-witness"
NS_TRUST = "cleanup-trust"
NS_AUDIT = "cleanup-audit"
NS_RECORD = "cleanup-record"  # stage and batch records, signed by the runner
_FPR_RE = re.compile(r"key (SHA256:\S+)")


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


def sign_bytes(data: bytes, key: str, namespace: str) -> bytes:
    """The detached SSHSIG (armored) of ``data`` by ``key``, made in a private temp dir."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cleanup-sign-") as d:
        path = os.path.join(d, "doc")
        with open(path, "wb") as fh:
            fh.write(data)
        with open(sign_file(path, key, namespace), "rb") as fh:
            return fh.read()


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


def _ssh_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def ssh_verify(doc_path: str, sig_path: str, allowed: str, principal: str, namespace: str,
               at: datetime | None) -> tuple[str, str | None, str]:
    """Ask ssh-keygen; return (state, key fingerprint, detail)."""
    args = [ssh_keygen(), "-Y", "verify", "-f", allowed, "-I", principal, "-n", namespace,
            "-s", sig_path]
    if at is not None:
        args += ["-O", f"verify-time={_ssh_time(at)}"]
    with open(doc_path, "rb") as fh:
        p = subprocess.run(args, stdin=fh, capture_output=True, text=True, timeout=60,
                           check=False)
    text = (p.stdout + p.stderr).strip()
    probe = text.replace(allowed, "")  # its path is in the messages: do not match on it
    fpr = _FPR_RE.search(p.stdout)
    if p.returncode == 0:
        return "valid", fpr.group(1) if fpr else None, "ok"
    last = [ln for ln in p.stderr.splitlines() if ln.strip() and "Could not verify" not in ln]
    detail = last[-1].strip() if last else text
    if "namespace" in probe:
        state = "wrong-namespace"
    elif "has expired" in probe:
        state = "key-expired"
    elif "not yet valid" in probe:
        state = "key-not-yet-valid"
    elif "incorrect signature" in probe:
        state = "bad-signature"
    elif "parse signature" in probe or "sshsig_armor" in probe:
        state = "malformed"
    else:
        # No principal in allowed_signers matched the key. OpenSSH 9.x says only
        # "Could not verify signature." here (older ones: "No principal matched").
        owners = _find_principals(sig_path, allowed)
        if owners:
            state, detail = "signer-mismatch", (f"the key belongs to {', '.join(owners)}, "
                                                f"not {principal}")
        else:
            state, detail = "unknown-key", (f"the signing key is not listed for {principal} "
                                            f"in {allowed}")
    return state, None, detail


def _find_principals(sig_path: str, allowed: str) -> list[str]:
    p = subprocess.run([ssh_keygen(), "-Y", "find-principals", "-s", sig_path, "-f", allowed],
                       capture_output=True, text=True, timeout=60, check=False,
                       stdin=subprocess.DEVNULL)
    return [ln.strip() for ln in p.stdout.splitlines() if ln.strip()] if p.returncode == 0 else []


def _regular(path: str) -> bool:
    """A regular file itself (not a FIFO, device or symlink): signature entries are."""
    import stat

    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_doc(path: str) -> dict[str, Any]:
    if not _regular(path):
        return {}
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _parse_time_or_none(v: Any) -> datetime | None:
    try:
        return parse_time(str(v)) if v else None
    except UsageError:
        return None


def load_signature(doc_path: str, sig_path: str, allowed: str, role: str, namespace: str,
                   expect_signer: str | None = None,
                   recorded_at: datetime | None = None) -> so.Signature:
    """Read a signed JSON and ask ssh-keygen about its signature: at the store's record
    time when there is one (I18: a key revoked since cannot sign "earlier"), else at
    the signed time."""
    doc = read_doc(doc_path)
    signer = str(doc.get("signer", ""))
    signed_at = _parse_time_or_none(doc.get("signed_at") or doc.get("time"))
    stage = doc.get("stage") if isinstance(doc.get("stage"), int) else None
    base = so.Signature(path=doc_path, role=role, signer=signer,
                        plan_id=str(doc.get("plan_id", "")), signed_at=signed_at,
                        crypto="malformed", comment=str(doc.get("comment", "")), stage=stage,
                        recorded_at=recorded_at)
    if not doc or not signer or doc.get("role") != role:
        return replace(base, crypto="malformed",
                          detail=f"{os.path.basename(doc_path)} is not a {role} document")
    if expect_signer is not None and signer != expect_signer:
        return replace(base, crypto="malformed",
                          detail=f"file is named for {expect_signer} but signed by {signer}")
    if not _regular(sig_path):
        return replace(base, crypto="malformed", detail=f"{sig_path} is missing or not a "
                                                        "regular file")
    state, fpr, detail = ssh_verify(doc_path, sig_path, allowed, signer, namespace,
                                    recorded_at or signed_at)
    return replace(base, crypto=state, fingerprint=fpr, detail=detail)
