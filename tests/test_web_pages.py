"""The dashboard's static files as the daemon serves them (no browser here)."""

from __future__ import annotations

import re

from daemon.web.pages import STATIC_DIR

TOKEN = "pages-admin-token-0123456789"


async def test_page_is_served_without_the_admin_token_but_the_api_is_not(
    daemon_client,
):
    client = await daemon_client(env={"REPLICATE_WEBHOOKD_ADMIN_TOKEN": TOKEN})
    page = await client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert '<script type="module" src="/static/app.js">' in await page.text()
    assert (await client.get("/api/jobs")).status == 401


async def test_page_forbids_scripts_and_frames_from_elsewhere(daemon_client):
    client = await daemon_client()
    for path in ("/", "/static/app.js"):
        response = await client.get(path)
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_every_module_the_page_imports_is_served_as_javascript(daemon_client):
    client = await daemon_client()
    names = {"app.js"}
    for script in STATIC_DIR.glob("*.js"):
        names.update(re.findall(r'from "\./([a-z_]+\.js)"', script.read_text()))
    for name in sorted(names):
        response = await client.get(f"/static/{name}")
        assert response.status == 200, name
        assert "javascript" in response.content_type, (name, response.content_type)
    css = await client.get("/static/app.css")
    assert css.content_type == "text/css"


async def test_static_route_serves_nothing_outside_its_folder(daemon_client):
    client = await daemon_client()
    for path in ("/static/../pages.py", "/static/%2e%2e/pages.py", "/static/%2fetc"):
        response = await client.get(path)
        assert response.status in (403, 404), path
        assert "import" not in await response.text(), path


async def test_static_misses_answer_404_in_the_one_json_error_shape(daemon_client):
    client = await daemon_client()
    for path in (
        "/static/missing.js",
        "/static",
        "/static/",
        "/static/app.js/",  # a file is not a folder
        "/static/app.js/x",
    ):
        response = await client.get(path)
        assert response.status == 404, path
        assert response.content_type == "application/json", path
        error = (await response.json())["error"]
        assert error["code"] == "not_found", path
        assert error["message"], path
