"""Retirement after a region migration (``plan --retire-to``) and the recoverability
guard (``plan --require-copy-in``) on local stores: which objects are candidates,
what blocks the others, regions (I13), and execution's re-verification of the copies
(a copy changed after the plan halts the stage, exit 5, nothing of the batch touched)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run, assert_one_line_error, make_key
from tests.scenario import Scenario, ok

SRC_REGION, DST_REGION = "eu-west-1", "eu-central-1"
OLD = time.time() - 3 * 86400  # older than the default 24 h buffer


def _write(root: Path, files: dict[str, bytes]) -> None:
    for k, data in files.items():
        p = root / k
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (OLD, OLD))


class Retire(Scenario):
    """A local source store (region eu-west-1 by declaration) and a local target
    (eu-central-1), both under ``tmp``; every key under tenant ``internal`` (stage 0)."""

    def __init__(self, tmp: Path, keys_dir: Path, source: dict[str, bytes],
                 target: dict[str, bytes]) -> None:
        self.src, self.dst = tmp / "src", tmp / "dst"
        self.src.mkdir()
        self.dst.mkdir()
        _write(self.src, source)
        _write(self.dst, target)
        super().__init__(tmp, str(self.src), signers={
            "alice": make_key(keys_dir, "alice"), "bob": make_key(keys_dir, "bob")})
        self.list_store("--trust-mtime")

    def regions(self, src: str = f"{SRC_REGION},{DST_REGION}", dst: str = DST_REGION,
                ) -> list[str]:
        return ["--allowed-regions", f"{self.src}={src}", "--allowed-regions",
                f"{self.dst}={dst}"]

    def plan(self, *extra: str, mode: str = "--retire-to", regions: list[str] | None = None,
             target_region: str = DST_REGION) -> Run:
        self.ensure_trust()
        return self.cli(["plan", "--store", self.store_url, "--inventory", str(self.inventory),
                         "-o", str(self.plan_dir), "--author", "alice",
                         "--key", str(self.signer_key("alice")), *self.reconcile_args,
                         "--region", SRC_REGION, "--internal", "internal", "--stages", "100%",
                         mode, str(self.dst), "--target-region", target_region,
                         *(self.regions() if regions is None else regions), "--json", *extra])

    def run_stage0(self) -> Run:
        ok(self.approve("bob"))
        self.snapshot_live(["elsewhere/unrelated.bin"])
        self.execute(0, "--region", SRC_REGION)  # publishes the challenge (exit 4)
        ok(self.cli(["witness", str(self.plan_dir), "--stage", "0", "--action", "execute",
                     "--signer", "bob", "--key", str(self.signer_key("bob"))]))
        return self.execute(0, "--region", SRC_REGION)


def _keys(n: int) -> dict[str, bytes]:
    return {f"internal/d/{i:03d}.bin": f"content {i} ".encode() * (i + 1) for i in range(n)}


@pytest.fixture
def world(tmp_path: Path, keys_dir: Path) -> Retire:
    src = _keys(8)
    dst = dict(src)
    dst["internal/d/001.bin"] = src["internal/d/001.bin"][:-1]  # size differs
    dst["internal/d/002.bin"] = b"X" + src["internal/d/002.bin"][1:]  # same size, other bytes
    del dst["internal/d/003.bin"]  # missing
    return Retire(tmp_path, keys_dir, src, dst)


def test_retire_candidates_are_exactly_the_verified_copies(world: Retire) -> None:
    r = ok(world.plan())
    out = json.loads(r.out)
    assert set(world.manifest()) == {f"internal/d/{i:03d}.bin" for i in (0, 4, 5, 6, 7)}
    c = out["copies"]
    assert (c["verified"], c["blocking"]) == (5, 3)
    assert c["blocking_reasons"] == {"copy missing": 1, "checksum differs": 1,
                                     "size differs": 1}
    assert c["methods"] == {"sha256": 5}
    plan = world.read_plan()
    assert (plan["copies"]["target_region"], plan["region"]) == (DST_REGION, SRC_REGION)
    assert plan["inputs"]["snapshot"]["source"].startswith("retire-to:")
    shown = " ".join(ok(world.cli(["show", str(world.plan_dir)])).out.split())
    assert f"in {SRC_REGION} after verifying copies in" in shown
    assert DST_REGION in shown
    html = world.tmp / "review.html"
    ok(world.cli(["review", str(world.plan_dir), "--html", str(html)]))
    page = html.read_text()
    assert "5 of 5 candidates backed up by a verified copy" in page
    assert "internal/d/003.bin" in page  # a blocking object, with its reason


def test_retire_executes_and_halts_on_a_rewritten_copy(tmp_path: Path, keys_dir: Path) -> None:
    src = _keys(6)
    w = Retire(tmp_path, keys_dir, src, dict(src))
    ok(w.plan())
    assert len(w.manifest()) == 6
    # A copy rewritten after the plan (same size, other content): execution halts.
    victim = w.dst / "internal/d/004.bin"
    victim.write_bytes(b"Z" * victim.stat().st_size)
    r = w.run_stage0()
    assert_one_line_error(r, 5, "I11 recoverable", "internal/d/004.bin")
    assert sorted(p.name for p in (w.src / "internal/d").iterdir()) == sorted(
        Path(k).name for k in src)  # nothing of the batch touched
    plan_id = w.current_plan_id()
    assert (w.src / "_cleanup/plans" / plan_id / "stages/0/halted.json").is_file()
    audit = " ".join(p.read_text() for p in (w.src / "_cleanup").rglob("*.json")
                     if "audit" in p.parts)
    assert '"halt"' in audit
    # The halt is the store's signed record: status shows it, execution refuses the stage.
    st = json.loads(ok(w.cli(["status", str(w.plan_dir), "--json"])).out)["stages"][0]
    assert st["state"] == "halted", st
    assert_one_line_error(w.execute(0, "--region", SRC_REGION), 3, "halted")


def test_retire_executes_when_copies_hold(tmp_path: Path, keys_dir: Path) -> None:
    src = _keys(5)
    w = Retire(tmp_path, keys_dir, src, dict(src))
    ok(w.plan())
    res = json.loads(ok(w.run_stage0()).out)
    assert res["removed"] == 5
    assert not any((w.src / "internal/d").iterdir())
    assert all((w.dst / k).read_bytes() == v for k, v in src.items())


def test_retire_with_key_map(tmp_path: Path, keys_dir: Path) -> None:
    src = _keys(4)
    dst = {"archive/" + k.removeprefix("internal/"): v for k, v in src.items()}
    w = Retire(tmp_path, keys_dir, src, dst)
    ok(w.plan("--map", "internal/=archive/"))
    assert len(w.manifest()) == 4
    res = json.loads(ok(w.run_stage0()).out)
    assert res["removed"] == 4


def test_retire_refuses_a_target_outside_the_declared_regions(world: Retire) -> None:
    # "Retiring" the only EU copy to a US store: refused, naming the invariant.
    r = world.plan(target_region="us-east-1",
                   regions=world.regions(dst="us-east-1"))
    assert_one_line_error(r, 3, "I13 residency", "us-east-1")
    assert not world.plan_dir.exists() or not any(world.plan_dir.iterdir())
    r = world.plan(target_region="us-east-1")
    assert_one_line_error(r, 3, "I13 residency", "us-east-1")
    r = world.plan(regions=["--allowed-regions", f"{world.dst}={DST_REGION}"])
    assert_one_line_error(r, 3, "I13 residency", "declare the regions")


def test_residency_from_config(world: Retire) -> None:
    cfg = world.tmp / "cleanup.toml"
    cfg.write_text(f'[residency]\n"{world.src}" = ["{SRC_REGION}", "{DST_REGION}"]\n'
                   f'"{world.dst}" = "{DST_REGION}"\n')
    r = ok(world.plan("--config", str(cfg), regions=[]))
    assert json.loads(r.out)["copies"]["allowed_regions"]


def test_cli_refusals_are_one_line(world: Retire) -> None:
    base = ["plan", "--store", str(world.src), "--inventory", str(world.inventory), "-o",
            str(world.tmp / "p2"), "--author", "alice", "--key", str(world.signer_key("alice"))]
    assert_one_line_error(world.cli(base), 2, "--snapshot is required")
    assert_one_line_error(world.cli([*base, "--snapshot", "x", "--map", "a/=b/"]), 2,
                          "--map needs --retire-to")
    assert_one_line_error(world.cli([*base, "--retire-to", str(world.dst), "--require-copy-in",
                                     str(world.dst)]), 2, "exclude each other")
    assert_one_line_error(world.cli([*base, "--retire-to", str(world.dst), "--strict"]), 2,
                          "--strict is for --require-copy-in")
    assert_one_line_error(world.cli([*base, "--snapshot", "x", "--checksum", "listed"]), 2,
                          "--checksum listed needs --retire-to")
    assert_one_line_error(world.cli([*base, "--retire-to", str(world.dst), "--checksum",
                                     "listed", "--verify-content"]), 2, "exclude each other")
    assert_one_line_error(world.cli([*base, "--retire-to", str(world.dst), "--map", "nosep"]),
                          2, "SRC-PREFIX=DST-PREFIX")


def _backup_world(tmp_path: Path, keys_dir: Path) -> Retire:
    src = _keys(6)
    dst = {k: v for k, v in src.items() if k != "internal/d/002.bin"}
    w = Retire(tmp_path, keys_dir, src, dst)
    # Orphans: everything but 000 and 001 is unreferenced.
    w.snapshot_refs(["internal/d/000.bin", "internal/d/001.bin"])
    return w


def _backup_plan(w: Retire, *extra: str) -> Run:
    w.ensure_trust()
    return w.cli(["plan", "--store", w.store_url, "--inventory", str(w.inventory),
                  "--snapshot", str(w.snapshot), "-o", str(w.plan_dir), "--author", "alice",
                  "--key", str(w.signer_key("alice")), *w.reconcile_args,
                  "--internal", "internal", "--stages", "100%", "--max-delete-fraction", "1",
                  "--require-copy-in", str(w.dst), "--json", *extra])


def test_require_copy_in_excludes_candidates_without_a_copy(tmp_path: Path,
                                                             keys_dir: Path) -> None:
    w = _backup_world(tmp_path, keys_dir)
    out: dict[str, Any] = json.loads(ok(_backup_plan(w)).out)
    assert set(w.manifest()) == {f"internal/d/{i:03d}.bin" for i in (3, 4, 5)}
    assert out["copies"]["blocking_examples"] == [["internal/d/002.bin", "copy missing"]]
    assert out["copies"]["mode"] == "backup"
    shown = json.loads(ok(w.cli(["show", str(w.plan_dir), "--json"])).out)
    assert shown["copies"]["verified"] == 3
    html = w.tmp / "review.html"
    ok(w.cli(["review", str(w.plan_dir), "--html", str(html)]))
    assert "backed up" in html.read_text()


def test_require_copy_in_strict_refuses(tmp_path: Path, keys_dir: Path) -> None:
    w = _backup_world(tmp_path, keys_dir)
    r = _backup_plan(w, "--strict")
    assert_one_line_error(r, 3, "I11 recoverable", "internal/d/002.bin")


def test_plan_json_copies_round_trip_and_strict_reader(world: Retire) -> None:
    from cleanup.errors import UsageError
    from cleanup.model import Plan

    ok(world.plan())
    raw = (world.plan_dir / "plan.json").read_bytes()
    plan = Plan.from_json(json.loads(raw))
    assert plan.copies is not None
    assert plan.to_bytes() == raw  # byte-identical round trip
    doc = json.loads(raw)
    doc["copies"]["surprise"] = 1
    with pytest.raises(UsageError, match="unknown key 'copies.surprise'"):
        Plan.from_json(doc)
    doc = json.loads(raw)
    doc["copies"]["mode"] = "yolo"
    with pytest.raises(UsageError, match="copies.mode"):
        Plan.from_json(doc)
    doc = json.loads(raw)
    assert "checksum" not in doc["copies"]  # the default is not written (ids unchanged)
    doc["copies"]["checksum"] = "listed"
    listed = Plan.from_json(doc)
    assert listed.copies is not None
    assert listed.copies.checksum == "listed"
    assert json.loads(listed.to_bytes())["copies"]["checksum"] == "listed"
    doc["copies"]["checksum"] = "weakest"
    with pytest.raises(UsageError, match="copies.checksum"):
        Plan.from_json(doc)
    doc = json.loads(raw)
    del doc["copies"]
    assert Plan.from_json(doc).copies is None


def test_checksum_choices_are_the_plan_model_policies() -> None:
    """`plan --checksum` offers exactly what plan.json's reader accepts, default first."""
    from cleanup.cli.plan_cmd import plan
    from cleanup.model import CHECKSUM_POLICIES

    opt = next(p for p in plan.params if p.name == "checksum")
    assert tuple(opt.type.choices) == CHECKSUM_POLICIES  # type: ignore[attr-defined]
    assert opt.default == CHECKSUM_POLICIES[0]
