"""/docs: Swagger UI from packaged files, every URL of the page same-origin and served."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from flask import Flask

from service.config import Settings
from service.http.app import create_app


class Page(HTMLParser):
    """The URLs a browser would load for the page, and inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.spec_url: str | None = None
        self._in_script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            if values.get("src"):
                self.urls.append(values["src"] or "")
            else:
                self.inline_scripts += 1
        elif tag == "link" and values.get("href"):
            self.urls.append(values["href"] or "")
        elif tag in ("img", "iframe") and values.get("src"):
            self.urls.append(values["src"] or "")
        if values.get("data-spec-url"):
            self.spec_url = values["data-spec-url"]


@pytest.fixture(scope="module")
def app() -> Flask:
    return create_app(Settings())


def test_docs_page_loads_only_same_origin_assets(app: Flask):
    client = app.test_client()
    resp = client.get("/docs")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    page = Page()
    page.feed(resp.get_data(as_text=True))
    assert page.inline_scripts == 0  # the CSP would block them
    assert len(page.urls) == 5, page.urls  # 2 stylesheets, favicon, bundle, init.js
    for url in page.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        with client.get(url) as asset:  # closes the file send_from_directory opened
            assert asset.status_code == 200, url
            assert len(asset.get_data()) > 0, url
    assert page.spec_url == "/openapi.yaml"
    assert client.get(page.spec_url).status_code == 200


def test_docs_bundle_is_swagger_ui_5(app: Flask):
    client = app.test_client()
    with client.get("/docs/assets/swagger-ui-bundle.js") as bundle:
        assert bundle.mimetype in ("text/javascript", "application/javascript")
        assert len(bundle.get_data()) > 500_000  # the real build, not a stub
    with client.get("/docs/assets/init.js") as init:
        # the default validator badge would call a third-party host
        assert "validatorUrl: null" in init.get_data(as_text=True)


def test_docs_serve_nothing_else_of_the_package(app: Flask):
    client = app.test_client()
    assert client.get("/docs/assets/oauth2-redirect.html").status_code == 404
    assert client.get("/docs/assets/..%2F__init__.py").status_code == 404
    assert client.get("/docs/assets/LICENSE").status_code == 404
