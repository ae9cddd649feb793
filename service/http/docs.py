"""Swagger UI at /docs, from files shipped in Python packages: no CDN, works offline.

The Swagger UI build comes from the flask-swagger-ui wheel (its `dist/` folder); only its
static files are used, not its blueprint, whose page starts Swagger UI with an inline script
that the Content-Security-Policy (`default-src 'self'`) forbids. Our starter script is
service/http/static/docs/init.js.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from flask import Blueprint, Response, abort, send_from_directory, url_for
from markupsafe import escape

bp = Blueprint("docs", __name__)
OWN_ASSETS = Path(__file__).parent / "static" / "docs"
SWAGGER_UI_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "index.css",
                              "favicon-32x32.png", "favicon-16x16.png"})
CACHE_SECONDS = 3600

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Tagwarden API</title>
  <link rel="stylesheet" href="{index_css}">
  <link rel="stylesheet" href="{swagger_css}">
  <link rel="icon" type="image/png" href="{favicon}" sizes="32x32">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{spec}"></div>
  <script src="{bundle}"></script>
  <script src="{init}"></script>
</body>
</html>
"""


def swagger_ui_dir() -> Path:
    """The Swagger UI build inside the installed flask-swagger-ui package."""
    return Path(str(resources.files("flask_swagger_ui").joinpath("dist")))


@bp.get("/docs")
@bp.get("/docs/")
def page() -> Response:
    """Swagger UI for /openapi.yaml."""
    def asset(name: str) -> str:
        return str(escape(url_for("docs.asset", name=name)))

    html = PAGE.format(
        index_css=asset("index.css"), swagger_css=asset("swagger-ui.css"),
        favicon=asset("favicon-32x32.png"), bundle=asset("swagger-ui-bundle.js"),
        init=asset("init.js"), spec=escape(url_for("openapi_yaml")),
    )
    return Response(html, mimetype="text/html")


@bp.get("/docs/assets/<name>")
def asset(name: str) -> Response:
    """One static file of the page (a fixed list: nothing else of the package is served)."""
    if name == "init.js":
        return send_from_directory(OWN_ASSETS, name, max_age=CACHE_SECONDS)
    if name not in SWAGGER_UI_FILES:
        abort(404)
    return send_from_directory(swagger_ui_dir(), name, max_age=CACHE_SECONDS)
