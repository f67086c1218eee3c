"""The report and the web chat in a real headless browser (Playwright driving Debian chromium).

`latentdiff serve` runs as a real server process; the page is driven like a user would: type a
question, press Ask, read the answer, follow a cited latent."""

from __future__ import annotations

import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from latentdiff.agent.chat.tools import RunView
from tests.conftest import _unavailable, serving

ID_RE = re.compile(r"\b(joint:\d+)\b")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    exe = os.environ.get("LATENTDIFF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _unavailable("no chromium on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _blank(png: Path) -> bool:
    from PIL import Image

    img = Image.open(png).convert("RGB")
    lo, hi = img.convert("L").getextrema()
    return hi - lo < 100 or len(img.getcolors(maxcolors=1 << 20) or []) < 50


@pytest.fixture(scope="module")
def server(chat_run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(chat_run.dir, tmp_path_factory.mktemp("serve")) as url:
        yield url


def test_report_html_shows_chart_and_table(browser, server: str, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 1600})
    page.goto(f"{server}/report")
    table, chart = page.locator("#shift-table"), page.locator("#plot-shift")
    assert table.is_visible() and chart.is_visible()
    assert page.locator("#shift-table tr").count() >= 7  # header + 6 categories
    assert chart.evaluate("img => img.complete && img.naturalWidth > 300")  # the embedded PNG decoded
    assert "95% CI" in table.inner_text() and "difference, pp" in table.inner_text()
    assert "corrected p" in table.inner_text()
    stats = page.locator("#statistics").inner_text()  # the test and correction, named beside the table
    assert "exact permutation test" in stats and "corrected across the 6 categories" in stats
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    assert not _blank(shot)
    page.close()


def test_web_chat_answers_cite_latents(browser, server: str, chat_run, tmp_path: Path) -> None:
    view = RunView(chat_run.dir)
    key = next(iter(view.by_key))
    questions = ["which new latents are about safety?", f"show me latent {key.split(':')[1]}",
                 "why did hallucination go down?", "compare multilingual between the two fine-tunes"]
    page = browser.new_page(viewport={"width": 1100, "height": 1400})
    page.goto(server)
    for i, q in enumerate(questions, 1):
        page.fill("#question", q)
        page.click("#send")
        page.locator(".answer").nth(i - 1).wait_for(timeout=60_000)
        text = page.locator(".answer").nth(i - 1).inner_text()
        cited = ID_RE.findall(text)
        assert cited and all(c in view.by_key for c in cited), (q, text)
    assert key in page.locator(".answer").nth(1).inner_text()
    shot = tmp_path / "chat.png"
    page.screenshot(path=str(shot), full_page=True)
    assert not _blank(shot)
    href = page.locator(".answer a.cite").first.get_attribute("href")
    assert href is not None and href.startswith("/latent/")
    page.goto(server + href)
    assert page.locator("#latent").inner_text() == href.removeprefix("/latent/")
    # the report's card, styled, with navigation back (issue 16)
    assert page.locator(".card .stats").count() == 1 and "Delta-norm" in page.locator(".card .stats").inner_text()
    assert page.locator("nav a[href='/report']").count() == 1 and page.locator("nav a[href='/']").count() == 1
    page.close()


def test_web_api_is_read_only(server: str) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        req = urllib.request.Request(f"{server}/api/chat", method=method, data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 405
    req = urllib.request.Request(f"{server}/api/chat", data=b'{"question": ""}',
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 422  # schema-validated input
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{server}/api/latent/joint:99999999", timeout=10)
    assert err.value.code == 404


@pytest.mark.parametrize("width", [1400, 400])
def test_report_latents_are_reachable_and_the_page_fits(browser, chat_run, width: int, tmp_path: Path) -> None:
    """Issue 16: every latent has a row and a card; filters and search work without a server; every id the
    summary cites resolves to a card; share and effect charts present; no horizontal overflow at 400 px."""
    import json

    report = json.loads((chat_run.dir / "report" / "report.json").read_text())
    ids = {c["id"] for c in report["latents"]}
    page = browser.new_page(viewport={"width": width, "height": 1200})
    page.goto((chat_run.dir / "report" / "report.html").resolve().as_uri())
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing overflows the viewport
    rows = page.locator("#latent-table tbody tr")
    assert rows.count() == len(ids) and page.locator(".card").count() == len(ids)
    assert {page.locator(".card").nth(i).get_attribute("id") for i in range(len(ids))} == {f"latent-{k}" for k in ids}
    assert page.inner_text("#latent-count") == f"{len(ids)} of {len(ids)} shown"
    cats = [c["category"] for c in report["latents"] if c["category"]]
    cat = max(set(cats), key=cats.count)
    n_cat = len({c["id"] for c in report["latents"] if c["category"] == cat})
    page.select_option("#latent-filter-category", cat)
    assert page.inner_text("#latent-count") == f"{n_cat} of {len(ids)} shown"
    assert page.locator("#latent-table tbody tr:visible").count() == n_cat
    some = sorted(ids)[0]
    page.select_option("#latent-filter-category", "")
    page.fill("#latent-search", some)
    visible = page.locator("#latent-table tbody tr:visible")
    assert visible.count() >= 1 and some in visible.first.inner_text()
    for cited in (report.get("summary") or {}).get("citations", []):
        assert page.locator(f"[id='latent-{cited}']").count() == 1, cited
    for link in page.locator("#summary ~ p.summary a").all():
        target = link.get_attribute("href")
        assert target and page.locator(f"[id='{target[1:]}']").count() == 1
    if report["headline"] and report["headline"].get("status", "ok") == "ok":
        assert page.locator("#plot-shift").evaluate("img => img.complete && img.naturalWidth > 300")
    assert page.locator("#plot-shares").evaluate("img => img.complete && img.naturalWidth > 300")
    assert page.locator("#plot-shares").evaluate("img => img.getBoundingClientRect().width") <= width
    assert page.locator("#how-to-read").count() == 1
    # latent pages: tokens shaded by activation (value on hover), histogram, logit lens, ablation effect
    card = page.locator(".card").first
    assert card.locator(".tok").count() > 0 and card.locator(".tok").first.get_attribute("title")
    assert card.locator("svg.hist rect").count() >= 2
    assert card.locator(".lens code").count() >= 2 and "promotes" in card.locator(".lens").inner_text()
    assert "next-token loss" in card.locator(".ablation").inner_text()
    assert card.locator(".ex.shaded[data-kind='negative']").count() >= 1
    page.screenshot(path=str(tmp_path / f"report_{width}.png"))
    page.close()
