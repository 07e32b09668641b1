"""`cleanup review`: the HTML report, opened in headless Chromium through Playwright.

Chromium comes from Debian's `chromium` package (installed by .ci/run). Where it
is missing the browser tests fail and say so (`.ci/run` installs it).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import assert_one_line_error, unavailable
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process
from tests.test_execute_local import Flow, ok

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    return Flow(tmp_path_factory.mktemp("review") / "demo")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM:
        msg = "chromium is not installed (Debian package 'chromium'; .ci/run installs it)"
        unavailable(msg)
    from playwright import sync_api  # a test dependency: its absence is an error

    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def test_review_writes_a_self_contained_report(flow: Flow, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    ok(run_cli(["review", str(flow.plan), "--html", str(out), "--allowed-signers",
                str(flow.d.allowed_signers)]))
    text = out.read_text()
    assert flow.plan_id in text
    assert "VERIFIED" in text
    for needle in ("http://", "https://", "<script", "<link"):
        assert needle not in text, needle  # no network, no CDN
    assert "<svg" in text


def test_review_escapes_keys_with_markup(tmp_path: Path, alice_key: Path) -> None:
    """A key with markup cannot inject into the page: it appears escaped, never raw."""
    from tests.test_plan_cli import OLD, Case

    case = Case(tmp_path, alice_key)
    evil = 'acme/t/<img src=x onerror="alert(1)">&.parquet'
    case.write(objects=[*case.objects, (evil, 10, OLD)])
    ok(case.plan())
    out = tmp_path / "report.html"
    ok(run_cli(["review", str(tmp_path / "plan"), "--html", str(out)]))
    text = out.read_text()
    assert "<img" not in text
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;.parquet" in text


def test_report_renders_in_chromium(flow: Flow, tmp_path: Path, browser: Any) -> None:
    out = tmp_path / "report.html"
    ok(run_cli(["review", str(flow.plan), "--html", str(out), "--allowed-signers",
                str(flow.d.allowed_signers)]))
    plan = flow.plan_json
    page = browser.new_page(viewport={"width": 1100, "height": 1400})
    page.goto(out.as_uri())
    assert page.locator("#plan-id").inner_text() == flow.plan_id
    assert page.locator("#verify").inner_text().startswith("VERIFIED")
    assert page.get_by_text("I1 strict-cutoff").is_visible()
    assert page.get_by_text(f"cutoff: {plan['cutoff']['time']}").is_visible()
    stages = page.locator("table.stages tbody tr")
    assert stages.count() == len(plan["stages"])
    assert stages.nth(0).locator("td").nth(3).inner_text() == str(plan["stages"][0]["objects"])
    assert page.locator("svg[aria-label='candidates by last_modified'] rect").count() > 0
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    page.close()


def test_overrides_come_first_in_red(tmp_path: Path, browser: Any) -> None:
    f = Flow(tmp_path / "demo", "--buffer", "30h")
    # Replan with a lowered minimum on the same inputs.
    shutil.rmtree(f.plan)
    ok(run_cli(["plan", "--store", str(f.d.store), "--inventory", str(f.root / "inv.parquet"),
                "--snapshot", str(f.root / "snap.parquet"), "-o", str(f.plan), "--buffer", "2h",
                "--override-minimums", "--author", "alice", "--key", str(f.d.key("alice"))]))
    out = tmp_path / "r.html"
    ok(run_cli(["review", str(f.plan), "--html", str(out)]))
    page = browser.new_page()
    page.goto(out.as_uri())
    first = page.locator("body > *").first
    assert first.get_attribute("id") == "overrides"
    assert "min_buffer lowered" in first.inner_text()
    assert first.evaluate("e => getComputedStyle(e).color") == "rgb(176, 0, 32)"
    page.close()


def test_review_of_a_tampered_plan_says_so(flow: Flow, tmp_path: Path) -> None:
    copy = tmp_path / "plan"
    shutil.copytree(flow.plan, copy)
    data = bytearray((copy / "manifest.parquet").read_bytes())
    data[100] ^= 1
    (copy / "manifest.parquet").write_bytes(bytes(data))
    out = tmp_path / "r.html"
    r = run_cli(["review", str(copy), "--html", str(out)])
    assert_one_line_error(r, 3, "I6 plan-integrity", "manifest.parquet does not match")
    assert not out.exists()
    show = json.loads(ok(run_cli(["show", str(copy), "--json"])).out)
    assert show["manifest_intact"] is False


def test_review_needs_a_plan(tmp_path: Path) -> None:
    assert_one_line_error(run_cli(["review", str(tmp_path), "--html", str(tmp_path / "r.html")]),
                          2, "not a plan directory")
