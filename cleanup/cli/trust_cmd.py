"""``cleanup trust init|propose|sign|show|verify|iam-policy``: the trust root in the store
(I17) and the least-privilege policies of the roles.

The library is imported inside each command: ``cleanup --help`` pays only for click.
"""

from __future__ import annotations

from typing import Any

import click

from cleanup.cli.iam_cmd import iam_policy
from cleanup.cli.options import ENDPOINT_HELP, json_option, store_options
from cleanup.cli.output import Output


def _floors(values: tuple[str, ...], base: Any = None) -> Any:
    from cleanup.core.trust import Floors
    from cleanup.errors import UsageError

    doc = (base or Floors()).to_json()
    for item in values:
        name, sep, val = item.partition("=")
        if not sep or name not in doc:
            raise UsageError(f"--floor {item!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(sorted(doc))}")
        doc[name] = int(val) if name == "min_approvals" and val.isdigit() else val
    try:
        return Floors.from_json(doc)
    except ValueError as exc:
        raise UsageError(f"--floor: {exc}") from None


def _open(store: str, endpoint_url: str | None, region: str | None) -> Any:
    from cleanup.stores import open_store

    return open_store(store, endpoint_url=endpoint_url, region=region)


@click.group("trust")
def trust_group() -> None:
    """The trust root in the store: who may author, approve, witness and run (I17).

    \b
    Setup (once per store):
      cleanup trust init STORE --from allowed_signers [--runner ci-bot] [--threshold 2]
      cleanup trust sign STORE --version 1 --signer NAME --key KEY   (every principal)
      cleanup trust show STORE          -> pin its digest in the runner's cleanup.toml:
                                           trust_root = "sha256:..."
    Rotation: `trust propose` (a new allowed_signers, threshold or floors), then the
    threshold of the current and of the new version run `trust sign --version N+1`.
    """


@trust_group.command("init")
@click.argument("store")
@click.option("--from", "from_file", required=True, type=click.Path(dir_okay=False),
              help="OpenSSH allowed_signers naming the principals and their keys "
                   "(valid-after/valid-before are kept).")
@click.option("--runner", "runners", multiple=True, metavar="NAME",
              help="A principal that is an automation identity: runner role only. "
                   "Repeatable. Everyone else may author, approve and witness.")
@click.option("--people-run", is_flag=True,
              help="Also give the people the runner role (small teams without automation; "
                   "the two-person rule still holds: a runner never witnesses itself).")
@click.option("--threshold", type=click.IntRange(1), default=None,
              help="Signatures needed to change the root [default: 2, or 1 for one "
                   "principal].")
@click.option("--floor", "floors", multiple=True, metavar="NAME=VALUE",
              help="A policy floor (min_approvals, min_buffer, min_hold, min_retention) or "
                   "ceiling (max_approval_ttl, max_witness_ttl, max_clock_skew, "
                   "max_delete_fraction [default 0.1], max_table_delete_fraction [default "
                   "0.95]). Repeatable.")
@store_options(region="S3 region.", endpoint=ENDPOINT_HELP)
@json_option()
def init(store: str, from_file: str, runners: tuple[str, ...], people_run: bool,
         threshold: int | None, floors: tuple[str, ...], endpoint_url: str | None,
         region: str | None, output: Output) -> None:
    """Create the trust root's version 1 in STORE (a conditional create: only one version 1
    can ever exist). Every principal it names must then sign it."""
    from cleanup import trust
    from cleanup.core.trust import ROLES

    roles = ROLES if people_run else tuple(r for r in ROLES if r != "runner")
    principals = trust.parse_allowed_signers(from_file, runners, roles)
    th = threshold or min(2, len(principals))
    digest, root = trust.init_root(_open(store, endpoint_url, region), principals,
                                   threshold=th, floors=_floors(floors))
    who = ", ".join(f"{n} ({'/'.join(p.roles)})" for n, p in sorted(root.principals.items()))
    output.result({"version": 1, "digest": digest, **root.to_json()}, [
        f"trust root version 1: {digest}",
        f"  principals: {who}",
        f"  next: each principal runs `cleanup trust sign {store} --version 1 --signer NAME "
        "--key KEY`;",
        f"  then pin it in the runner's cleanup.toml: trust_root = \"{digest}\""])


@trust_group.command("propose")
@click.argument("store")
@click.option("--trust-root", "pin", required=True, metavar="sha256:HEX",
              help="The pinned digest of version 1.")
@click.option("--from", "from_file", type=click.Path(dir_okay=False),
              help="The new principals (allowed_signers) [default: unchanged].")
@click.option("--runner", "runners", multiple=True, metavar="NAME",
              help="With --from: runner-only principals.")
@click.option("--people-run", is_flag=True, help="With --from: people may also run.")
@click.option("--threshold", type=click.IntRange(1), help="New threshold [default: same].")
@click.option("--floor", "floors", multiple=True, metavar="NAME=VALUE",
              help="Change a floor. Repeatable.")
@store_options(region="S3 region.", endpoint=ENDPOINT_HELP)
@json_option()
def propose(store: str, pin: str, from_file: str | None, runners: tuple[str, ...],
            people_run: bool, threshold: int | None, floors: tuple[str, ...],
            endpoint_url: str | None, region: str | None, output: Output) -> None:
    """Create version N+1 (conditional create: one N+1 only). It takes effect once the
    threshold of version N and the threshold of N+1 have signed it."""
    from cleanup import trust
    from cleanup.core.trust import ROLES

    s = _open(store, endpoint_url, region)
    cur = trust.verify_chain(s, pin)
    principals = None
    if from_file:
        roles = ROLES if people_run else tuple(r for r in ROLES if r != "runner")
        principals = trust.parse_allowed_signers(from_file, runners, roles)
    version, digest, root = trust.propose(
        s, pin, principals=principals, threshold=threshold,
        floors=_floors(floors, cur.root.floors) if floors else None)
    output.result({"version": version, "digest": digest, **root.to_json()},
                  [f"proposed trust root version {version}: {digest}",
                   f"  next: {cur.root.threshold} of version {version - 1}'s and "
                   f"{root.threshold} of version {version}'s principals run `cleanup trust "
                   f"sign {store} --version {version} --signer NAME --key KEY`"])


@trust_group.command("sign")
@click.argument("store")
@click.option("--version", "version", required=True, type=click.IntRange(1),
              help="The trust root version to sign.")
@click.option("--signer", required=True, help="Your principal name.")
@click.option("--key", required=True, type=click.Path(dir_okay=False),
              help="Your SSH key (namespace cleanup-trust).")
@store_options(region="S3 region.", endpoint=ENDPOINT_HELP)
@json_option()
def sign(store: str, version: int, signer: str, key: str, endpoint_url: str | None,
         region: str | None, output: Output) -> None:
    """Sign trust root VERSION (after reading it: `cleanup trust show`)."""
    from cleanup import trust

    path = trust.sign(_open(store, endpoint_url, region), version, signer, key)
    output.result({"version": version, "signer": signer, "signature": path},
                  f"signed trust root version {version} as {signer} -> {path}")


@trust_group.command("show")
@click.argument("store")
@click.option("--version", "version", type=click.IntRange(1), default=1, show_default=True,
              help="The version to show.")
@click.option("--pin", "pin_only", is_flag=True,
              help="Print only the digest (of version 1: the runner's pin), for scripts.")
@store_options(region="S3 region.", endpoint=ENDPOINT_HELP)
@json_option()
def show(store: str, version: int, pin_only: bool, endpoint_url: str | None,
         region: str | None, output: Output) -> None:
    """Print a trust root version, its digest (version 1's is the pin) and who signed it.
    Nothing is verified here: `cleanup trust verify` does that against a pin."""
    from cleanup import trust
    from cleanup.core.trust import digest, parse_root
    from cleanup.errors import UsageError

    s = _open(store, endpoint_url, region)
    data = s.get_bytes(trust.root_key(version))
    if data is None:
        raise UsageError(f"{store} has no trust root version {version}",
                         hint="create version 1 with `cleanup trust init`")
    root = parse_root(data, version)
    if pin_only:
        output.result({"digest": digest(data)}, digest(data))
        return
    signed = trust.signers_of(s, version)
    output.result({"version": version, "digest": digest(data), "signed_by": signed,
                   **root.to_json()},
                  [f"trust root version {version}: {digest(data)}",
                   f"  threshold {root.threshold}; floors {root.floors.to_json()}",
                   *[f"  {n}: {', '.join(p.roles)}; {len(p.keys)} key(s)"
                     + (f"; valid before {p.valid_before:%Y-%m-%dT%H:%M:%SZ}"
                        if p.valid_before else "")
                     for n, p in sorted(root.principals.items())],
                   f"  signed by: {', '.join(signed) or 'nobody yet'}"])


@trust_group.command("verify")
@click.argument("store")
@click.option("--trust-root", "pin", metavar="sha256:HEX",
              help="The pinned digest of version 1 [default: CLEANUP_TRUST_ROOT, then "
                   "trust_root in ./cleanup.toml].")
@click.option("--config", type=click.Path(dir_okay=False), help="The runner's cleanup.toml.")
@store_options(region="S3 region.", endpoint=ENDPOINT_HELP)
@json_option()
def verify(store: str, pin: str | None, config: str | None, endpoint_url: str | None,
           region: str | None, output: Output) -> None:
    """Verify the chain from the pinned version 1 to the newest fully signed version
    (exit 4 naming I17 if it does not hold)."""
    from cleanup import trust

    root = trust.current(_open(store, endpoint_url, region), pin, config)
    output.result(root.to_json, [
        f"{'I17 trust-root'}: ok: version {root.version} ({root.digest})",
        f"  principals: {', '.join(sorted(root.root.principals))}; threshold "
        f"{root.root.threshold}",
        *([f"  pending: version {root.pending}, missing signatures of "
           f"{', '.join(root.pending_missing)}"] if root.pending else [])])


trust_group.add_command(iam_policy)
