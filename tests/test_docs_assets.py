"""Data Docs asset rewriting: pure functions on page text, and one site folder on disk."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from expectations.docs_assets import (
    ASSETS,
    DROPPED,
    GE_WEB_ASSETS,
    localize,
    localize_site,
)

JQUERY = "https://code.jquery.com/jquery-3.7.1.min.js"
POPPER = "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js"
FONT_AWESOME = "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css"
DARK = next(iter(DROPPED))
LOGO = f"{GE_WEB_ASSETS}logo-long.png?d=20261126T043015Z&dataContextId=85f7fe36"

PAGE = f"""<html><head>
<link rel="stylesheet" href="{FONT_AWESOME}">
<link rel="stylesheet" href="{DARK}" />
<script src="{JQUERY}"></script>
<script src="{POPPER}" integrity="sha384-ApNbgh9B" crossorigin="anonymous"></script>
<script src="https://example.org/tracker.js"></script>
<style>.navbar-brand a {{ background: url('{GE_WEB_ASSETS}full_logo_dark.png') 0 0; }}</style>
</head><body>
<a href="https://greatexpectations.io">GX</a>
<img class="NO-CACHE" src="{LOGO}" alt="Great Expectations"/>
</body></html>"""

ALL = {a.local for a in ASSETS} | {"images/logo-long.png"}


def test_known_assets_point_at_their_local_copies_relative_to_the_page():
    html, external = localize(PAGE, "../../static", ALL)
    fa = next(a for a in ASSETS if a.url == FONT_AWESOME)
    assert f'href="../../static/{fa.local}"' in html
    assert fa.local == "vendor/font-awesome/6.6.0/css/all.min.css"
    assert '<script src="../../static/vendor/jquery/3.7.1/jquery.min.js"></script>' in html
    # SRI and CORS attributes cannot be satisfied by file:// pages: gone with the CDN URL.
    assert '<script src="../../static/vendor/popper.js/1.12.9/umd/popper.min.js"></script>' in html
    assert "integrity" not in html and "crossorigin" not in html
    # GE's S3 logo (with its tracking query) and the dark-mode logo use GE's local image.
    assert 'class="NO-CACHE" src="../../static/images/logo-long.png" alt=' in html
    assert "url('../../static/images/logo-long.png')" in html
    assert DARK not in html and "bootstrap-prefers-dark" not in html
    # Links a person clicks stay as they are; an unknown script is left and reported.
    assert '<a href="https://greatexpectations.io">' in html
    assert external == ["https://example.org/tracker.js"]
    assert "cdnjs" not in html and "code.jquery.com" not in html and GE_WEB_ASSETS not in html


def test_an_asset_without_a_local_copy_keeps_its_url_and_is_reported():
    available = ALL - {"vendor/jquery/3.7.1/jquery.min.js"}
    html, external = localize(PAGE, "static", available)
    assert f'<script src="{JQUERY}"></script>' in html
    assert external == [JQUERY, "https://example.org/tracker.js"]
    assert 'src="static/vendor/popper.js/1.12.9/umd/popper.min.js"' in html


def test_localize_is_idempotent():
    once, _ = localize(PAGE, "static", ALL)
    twice, external = localize(once, "static", ALL)
    assert twice == once
    assert external == ["https://example.org/tracker.js"]


def test_every_external_asset_in_ge_templates_has_a_local_copy_or_is_dropped():
    import great_expectations

    templates = Path(great_expectations.__file__).parent / "render" / "view"
    texts = [p.read_text() for p in templates.rglob("*.j2")]
    texts += [p.read_text() for p in (templates / "static" / "styles").glob("*.css")]
    loaded = set()
    for text in texts:
        _, external = localize(text, "static", ALL)
        assert external == [], external
        loaded |= set(re.findall(r"https?://[^\"' )]+", text))
    # The table names only URLs the templates use (stale entries would hide a GE upgrade).
    assert {a.url for a in ASSETS} <= loaded
    assert set(DROPPED) <= loaded


def test_localize_site_vendors_assets_and_rewrites_nested_pages(tmp_path, caplog):
    assets = tmp_path / "assets"
    for asset in ASSETS:
        (assets / asset.local).parent.mkdir(parents=True, exist_ok=True)
        (assets / asset.local).write_text(f"/* {asset.url} */")
    (assets / ".complete").write_text("test set\n")
    site = tmp_path / "site"
    (site / "static" / "images").mkdir(parents=True)
    (site / "static" / "images" / "logo-long.png").write_bytes(b"png")
    (site / "static" / "styles").mkdir()
    (site / "static" / "styles" / "default.css").write_text(
        f"a {{ background: url('{GE_WEB_ASSETS}full_logo_dark.png'); }}"
    )
    page = site / "validations" / "gold_metrics" / "run" / "20261126T0000Z" / "batch.html"
    page.parent.mkdir(parents=True)
    page.write_text(PAGE)
    (site / "index.html").write_text(PAGE)

    with caplog.at_level(logging.WARNING, logger="expectations.docs_assets"):
        remaining = localize_site(site, assets)

    assert remaining == ["https://example.org/tracker.js"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "https://example.org/tracker.js" in warnings[0]
    jquery = site / "static" / "vendor" / "jquery" / "3.7.1" / "jquery.min.js"
    assert jquery.read_text() == f"/* {JQUERY} */"
    assert 'src="../../../../static/vendor/jquery/3.7.1/jquery.min.js"' in page.read_text()
    assert 'src="static/vendor/jquery/3.7.1/jquery.min.js"' in (site / "index.html").read_text()
    css = (site / "static" / "styles" / "default.css").read_text()
    assert "url('../images/logo-long.png')" in css
    # Every rewritten reference resolves to a file inside the site.
    for html in (page, site / "index.html"):
        for ref in re.findall(r'(?:src|href)="([^"#:]+)"', html.read_text()):
            assert (html.parent / ref).resolve().is_file(), ref


def test_localize_site_without_assets_still_uses_ge_images_and_warns_once(tmp_path, caplog):
    site = tmp_path / "site"
    (site / "static" / "images").mkdir(parents=True)
    (site / "static" / "images" / "logo-long.png").write_bytes(b"png")
    (site / "index.html").write_text(PAGE)
    with caplog.at_level(logging.WARNING, logger="expectations.docs_assets"):
        remaining = localize_site(site, tmp_path / "never-fetched")
    html = (site / "index.html").read_text()
    assert 'src="static/images/logo-long.png"' in html and f'src="{JQUERY}"' in html
    assert JQUERY in remaining and POPPER in remaining and FONT_AWESOME in remaining
    assert len(caplog.records) == 1 and "cryptoflow setup" in caplog.records[0].getMessage()
