"""Self-contained Data Docs: local copies of the assets GE's pages load from the internet.

GE 1.24's page templates hard-code jQuery, popper, Bootstrap, bootstrap-table,
bootstrap-datepicker, font-awesome and vega / vega-lite / vega-embed from public CDNs, a
dark-mode Bootstrap theme from jsDelivr, and the navbar logo from GE's S3 bucket. Offline,
those loads fail and so do GE's inline scripts that call jQuery.

``cryptoflow setup`` resolves the same libraries as WebJars from Maven Central
(:data:`DOCS_JARS`, through ``cryptoflow.core.jars``) and extracts the files the pages use into
``<jar cache>/docs-assets-<hash>/vendor/<artifact>/<version>/`` (:func:`ensure_docs_assets`).
After every Data Docs build, :func:`localize_site` copies that folder to the site's
``static/vendor/`` and points each page's ``<script src>``, ``<link href>``, ``<img src>`` and
CSS ``url(...)`` at the copy by a relative path, so the site works from ``file://`` and when
the folder is copied elsewhere. The logo comes from GE's own ``static/images``. The dark-mode
theme (``@forevolve/bootstrap-dark``) has no WebJar: its link is dropped, so dark mode shows
Bootstrap's light theme with GE's own dark-mode overrides. An asset with no local copy keeps
its CDN URL and is named in one warning; the build never fails for it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from cryptoflow.core.errors import ServiceError
from cryptoflow.core.jars import JarSet, ensure_jars

log = logging.getLogger(__name__)

WEBJAR_ROOT = "META-INF/resources/webjars"
VENDOR = "vendor"  # under the site's static/ folder and the assets cache
#: GE's S3 bucket for web images; the same images ship in the site's static/images.
GE_WEB_ASSETS = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
#: S3 images with no local twin -> the local image shown instead.
IMAGE_ALIASES = {"full_logo_dark.png": "logo-long.png"}
#: Links with no WebJar: removed from the pages, with the reason.
DROPPED = {
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
    "dark-mode Bootstrap theme: not published as a WebJar; dark mode uses the light theme",
}  # fmt: skip


@dataclass(frozen=True)
class Asset:
    """One external file GE's pages load, and where its WebJar keeps it."""

    url: str  # exactly as GE's templates write it
    jar: str  # group:artifact:version of the WebJar
    member: str  # path under the WebJar's webjars/<artifact>/<version>/ folder
    folder: str | None = None  # a folder of the WebJar the file refers to (fonts), copied too
    integrity: str | None = None  # GE's SRI hash: the vendored bytes must match it

    @property
    def artifact(self) -> str:
        return self.jar.split(":")[1]

    @property
    def version(self) -> str:
        return self.jar.split(":")[2]

    @property
    def local(self) -> str:
        """Path of the copy under the site's ``static/`` folder."""
        return f"{VENDOR}/{self.artifact}/{self.version}/{self.member}"


JQUERY = "org.webjars:jquery:3.7.1"
POPPER = "org.webjars:popper.js:1.12.9"
BOOTSTRAP = "org.webjars:bootstrap:4.3.1"
# 1.19.1 also for the filter-control CSS GE takes from 1.19.0 (no 1.19.0 WebJar exists).
BOOTSTRAP_TABLE = "org.webjars.npm:bootstrap-table:1.19.1"
DATEPICKER = "org.webjars:bootstrap-datepicker:1.9.0"
FONT_AWESOME = "org.webjars:font-awesome:6.6.0"
# GE asks jsDelivr for the newest vega@5, vega-lite@5, vega-embed@6: the newest WebJars of
# those majors.
VEGA = "org.webjars:vega:5.32.0"
VEGA_LITE = "org.webjars:vega-lite:5.23.0"
VEGA_EMBED = "org.webjars:vega-embed:6.29.0"

_BT = "https://unpkg.com/bootstrap-table@"
_FILTER = "dist/extensions/filter-control/bootstrap-table-filter-control"
ASSETS: tuple[Asset, ...] = (
    Asset("https://cdn.jsdelivr.net/npm/vega@5", VEGA, "vega.min.js"),
    Asset("https://cdn.jsdelivr.net/npm/vega-lite@5", VEGA_LITE, "vega-lite.min.js"),
    Asset("https://cdn.jsdelivr.net/npm/vega-embed@6", VEGA_EMBED, "vega-embed.min.js"),
    Asset(
        "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css",
        FONT_AWESOME, "css/all.min.css", folder="webfonts",
    ),
    Asset("https://code.jquery.com/jquery-3.7.1.min.js", JQUERY, "jquery.min.js"),
    Asset(
        "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js",
        POPPER, "umd/popper.min.js",
        integrity="sha384-ApNbgh9B+Y1QKtv3Rn7W3mgPxhU9K/ScQsAP7hUibX39j7fakFPskvXusvfa0b4Q",
    ),
    Asset(
        "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js",
        BOOTSTRAP, "js/bootstrap.min.js",
        integrity="sha384-JjSmVgyd0p3pXB1rRibZUAYoIIy6OrQ6VrjIEaFf/nJGzIxFDsf4x0xIM+B07jRM",
    ),
    Asset(
        "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css",
        BOOTSTRAP, "css/bootstrap.min.css",
    ),
    Asset(f"{_BT}1.19.1/dist/bootstrap-table.min.js", BOOTSTRAP_TABLE,
          "dist/bootstrap-table.min.js"),
    Asset(f"{_BT}1.19.1/dist/bootstrap-table.min.css", BOOTSTRAP_TABLE,
          "dist/bootstrap-table.min.css"),
    Asset(f"{_BT}1.19.1/{_FILTER}.min.js", BOOTSTRAP_TABLE, f"{_FILTER}.min.js"),
    Asset(f"{_BT}1.19.0/{_FILTER}.css", BOOTSTRAP_TABLE, f"{_FILTER}.css"),
    Asset(f"{_BT}1.19.0/{_FILTER}.min.css", BOOTSTRAP_TABLE, f"{_FILTER}.min.css"),
    Asset(
        "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js",
        DATEPICKER, "js/bootstrap-datepicker.min.js",
    ),
    Asset(
        "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css",
        DATEPICKER, "css/bootstrap-datepicker.min.css",
    ),
)  # fmt: skip
_BY_URL = {a.url: a for a in ASSETS}

DOCS_JARS = JarSet("docs", tuple(sorted({a.jar for a in ASSETS})), transitive=False)


def assets_dir(cache: Path) -> Path:
    """Where :func:`ensure_docs_assets` extracts the files (keyed by jars and file list)."""
    files = "|".join(f"{a.jar}/{a.member}/{a.folder}" for a in ASSETS)
    key = hashlib.sha1(f"{DOCS_JARS.directory(cache).name}|{files}".encode()).hexdigest()[:10]
    return cache / f"docs-assets-{key}"


def ensure_docs_assets(cache: Path, repo_url: str) -> tuple[Path, bool]:
    """Resolve :data:`DOCS_JARS` and extract the files the pages use, unless done before.

    Returns (assets directory, fetched now?). Raises ``ServiceError`` when Maven cannot
    resolve the WebJars or a file is missing or differs from the hash GE pins.
    """
    target = assets_dir(cache)
    if (target / ".complete").exists():
        return target, False
    jars, _ = ensure_jars(cache, DOCS_JARS, repo_url)
    staging = target.with_name(target.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for asset in ASSETS:
            _extract(jars, asset, staging)
        (staging / ".complete").write_text("".join(f"{a.url} {a.local}\n" for a in ASSETS))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, True


def _extract(jars: Path, asset: Asset, staging: Path) -> None:
    jar = jars / f"{asset.artifact}-{asset.version}.jar"
    prefix = f"{WEBJAR_ROOT}/{asset.artifact}/{asset.version}/"
    folder = f"{asset.folder.rstrip('/')}/" if asset.folder else None
    try:
        with zipfile.ZipFile(jar) as zf:
            inside = [n[len(prefix) :] for n in zf.namelist() if n.startswith(prefix)]
            names = [
                n for n in inside
                if n == asset.member or (folder and n.startswith(folder) and not n.endswith("/"))
            ]  # fmt: skip
            if asset.member not in names:
                raise ServiceError(f"{jar.name} has no {prefix}{asset.member} (for {asset.url})")
            if folder and names == [asset.member]:
                raise ServiceError(f"{jar.name} has no files under {prefix}{folder}")
            for name in names:
                data = zf.read(prefix + name)
                if name == asset.member and asset.integrity:
                    _check_integrity(asset, data)
                out = staging / VENDOR / asset.artifact / asset.version / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
    except (OSError, zipfile.BadZipFile) as e:
        raise ServiceError(f"cannot read {asset.member} from {jar}: {e}") from e


def _check_integrity(asset: Asset, data: bytes) -> None:
    algo, _, expected = (asset.integrity or "").partition("-")
    actual = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if actual != expected:
        raise ServiceError(
            f"{asset.jar} {asset.member} differs from the file GE pins ({asset.integrity})"
        )


# --- rewriting pages -------------------------------------------------------------------------

_TAG = re.compile(r"<(script|link|img)\b[^>]*>(?:\s*</script>)?", re.IGNORECASE)
_ATTR = re.compile(r"""\b(src|href)\s*=\s*(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_SRI = re.compile(r"""\s+(?:integrity|crossorigin)(?:\s*=\s*(["']).*?\1)?""", re.IGNORECASE)
_CSS_URL = re.compile(r"""url\(\s*(["']?)(https?://[^"')\s]+)\1\s*\)""", re.IGNORECASE)


def local_target(url: str) -> str | None:
    """Path under the site's ``static/`` folder that stands for ``url`` (None: none known)."""
    if url in _BY_URL:
        return _BY_URL[url].local
    if url.startswith(GE_WEB_ASSETS):
        name = url[len(GE_WEB_ASSETS) :].split("?", 1)[0].split("#", 1)[0]
        if name and "/" not in name:
            return f"images/{IMAGE_ALIASES.get(name, name)}"
    return None


def localize(text: str, to_static: str, available: Collection[str]) -> tuple[str, list[str]]:
    """Point a page's (or stylesheet's) external assets at their local copies.

    ``to_static`` is the relative path from the file's folder to the site's ``static/``
    folder (``static`` for index.html, ``..`` for a stylesheet in ``static/styles``);
    ``available`` holds the paths under ``static/`` that exist. Known URLs whose copy is
    available become ``<to_static>/<path>`` (a tag also loses ``integrity`` and
    ``crossorigin``, which file:// pages cannot satisfy); links in :data:`DROPPED` are
    removed. Returns the new text and the http(s) URLs it still loads, in order.
    """
    external: list[str] = []

    def local_url(url: str) -> str | None:
        target = local_target(url)
        if target is not None and target in available:
            return f"{to_static.rstrip('/')}/{target}"
        if url.lower().startswith(("http://", "https://", "//")):
            external.append(url)
        return None

    def tag(m: re.Match[str]) -> str:
        whole = m.group(0)
        attr = _ATTR.search(whole)
        if not attr:
            return whole
        url = attr.group(3).replace("&amp;", "&")
        if url in DROPPED:
            return ""
        new = local_url(url)
        if new is None:
            return whole
        head, tail = whole[: attr.start()], whole[attr.end() :]
        quote = attr.group(2)
        return _SRI.sub("", head) + f"{attr.group(1)}={quote}{new}{quote}" + _SRI.sub("", tail)

    def css_url(m: re.Match[str]) -> str:
        new = local_url(m.group(2))
        return m.group(0) if new is None else f"url('{new}')"

    return _CSS_URL.sub(css_url, _TAG.sub(tag, text)), external


def _files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _copy_vendor(assets: Path, static: Path) -> None:
    """Copy the extracted assets into the site (skipped when the same set is there)."""
    stamp = (assets / ".complete").read_text()
    marker = static / VENDOR / ".complete"
    if marker.is_file() and marker.read_text() == stamp:
        return
    shutil.copytree(assets / VENDOR, static / VENDOR, dirs_exist_ok=True)
    marker.write_text(stamp)


def localize_site(site: Path, assets: Path | None) -> list[str]:
    """Vendor the assets into ``site`` and rewrite its pages and stylesheets to use them.

    ``assets`` is the extracted assets folder (None or incomplete: only GE's own images are
    used). Returns the external URLs the site still loads, logged in one warning line.
    """
    static = site / "static"
    if assets is not None and (assets / ".complete").is_file():
        _copy_vendor(assets, static)
    available = _files_under(static) if static.is_dir() else set()
    remaining: set[str] = set()
    files = [*site.rglob("*.html"), *(static / "styles").glob("*.css")]
    for path in files:
        text = path.read_text(encoding="utf-8")
        to_static = os.path.relpath(static, path.parent).replace(os.sep, "/")
        new, external = localize(text, to_static, available)
        remaining.update(external)
        if new != text:
            path.write_text(new, encoding="utf-8")
    if remaining:
        log.warning(
            "Data Docs: no local copy of %d asset(s), the pages load them from the internet "
            "(run `cryptoflow setup` to fetch them): %s",
            len(remaining), " ".join(sorted(remaining)),
        )  # fmt: skip
    return sorted(remaining)
