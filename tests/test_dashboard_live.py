"""The dashboard's live parts in Chromium: event streams across tabs and fast
navigation, a log the daemon replaced, hash routes that lead nowhere, and the
jobs list paged past one API call's worth.

Headless Chromium reports every tab as visible, so `set_visibility` plays the
part of the browser hiding a tab: it sets document.visibilityState and sends
the `visibilitychange` event the page listens to.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.browser import Page, post_webhook, screenshot
from tests.helpers import WEBHOOK_PATH, signed_headers
from tests.test_dashboard import training

SAME_HOST_CONNECTIONS = 6  # Chromium's limit for HTTP/1.1, shared by all tabs


async def set_visibility(page: Any, state: str) -> None:
    await page.evaluate(
        """(state) => {
            for (const [name, value] of [
                ["visibilityState", state],
                ["hidden", state === "hidden"],
            ])
                Object.defineProperty(document, name, { value, configurable: true });
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


def track_streams(page: Any) -> set[str]:
    """The event-stream requests of `page` that are open right now."""
    open_streams: dict[Any, str] = {}

    def started(request: Any) -> None:
        if "/api/events" in request.url:
            open_streams[request] = request.url

    def ended(request: Any) -> None:
        open_streams.pop(request, None)

    page.on("request", started)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)
    return open_streams  # type: ignore[return-value]


async def test_hidden_tabs_give_back_their_connections_and_catch_up_when_shown(
    dashboard, secret, browser: Page
):
    daemon = dashboard()
    await post_webhook(daemon, secret, training("tabsjob-1", "succeeded", output=[]))
    context = browser.page.context
    tabs = [browser.page]
    tabs += [await context.new_page() for _ in range(SAME_HOST_CONNECTIONS - 1)]
    for tab in tabs:
        tab.set_default_timeout(5000)
        await tab.goto(daemon.url + "/")
        await tab.locator("#live-state", has_text="live").wait_for()
        await set_visibility(tab, "hidden")
        await tab.locator("#live-state", has_text="paused").wait_for()

    # Every connection the browser allows this host was held by a stream before.
    extra = await context.new_page()
    await extra.goto(daemon.url + "/")
    await extra.locator("tr[data-job='tabsjob-1']").wait_for()
    await extra.locator("#live-state", has_text="live").wait_for()

    # A job that arrived while the first tab was hidden is there once it is shown.
    await post_webhook(daemon, secret, training("tabsjob-2", "processing"))
    first = tabs[0]
    assert await first.locator("tr[data-job='tabsjob-2']").count() == 0
    await set_visibility(first, "visible")
    await first.locator("tr[data-job='tabsjob-2']").wait_for()
    await first.locator("#live-state", has_text="live").wait_for()


async def test_fast_navigation_leaves_only_the_last_pages_stream_open(
    dashboard, secret, browser: Page
):
    daemon = dashboard()
    job_id = "navjob000000000000000001"
    await post_webhook(daemon, secret, training(job_id, "processing", logs="x\n"))
    page = browser.page
    streams = track_streams(page)

    async def slow(route: Any) -> None:
        await asyncio.sleep(1.0)  # the job page is still loading...
        await route.continue_()

    await page.route(f"**/api/jobs/{job_id}**", slow)
    await page.goto(daemon.url + "/")
    await page.locator("#live-state", has_text="live").wait_for()
    await page.evaluate(f"location.hash = '#/jobs/{job_id}'")
    await page.locator("h1", has_text=job_id).wait_for()
    await page.evaluate("location.hash = '#/settings'")  # ...when the user moves on
    await page.locator("#save-settings:enabled").wait_for()
    await page.locator("#live-state", has_text="live").wait_for()
    await asyncio.sleep(1.5)  # the job page's answers have come meanwhile
    assert [url.split("/api/events")[1] for url in streams.values()] == [""]
    assert await page.locator("h1").text_content() == "Cloud settings"


async def test_a_replaced_log_is_shown_whole_not_spliced_onto_the_old_one(
    dashboard, secret, browser: Page
):
    daemon = dashboard()
    job_id = "relogjob0000000000000001"
    first = "attempt 1: loading weights\n"
    await post_webhook(daemon, secret, training(job_id, "processing", logs=first))
    page = browser.page
    await page.goto(f"{daemon.url}/#/jobs/{job_id}")
    log = page.locator("#job-logs")
    await log.get_by_text("attempt 1").wait_for()
    await page.locator("#live-state", has_text="live").wait_for()

    # Longer, but not an extension: the daemon replaces what it stored.
    second = "attempt 2 (restarted): loading weights\nstep 1/10\n"
    await post_webhook(daemon, secret, training(job_id, "processing", logs=second))
    await page.wait_for_function(
        "(text) => document.getElementById('job-logs').textContent === text", arg=second
    )
    third = second + "step 2/10\n"  # an extension is appended as before
    await post_webhook(daemon, secret, training(job_id, "processing", logs=third))
    await page.wait_for_function(
        "(text) => document.getElementById('job-logs').textContent === text", arg=third
    )


async def test_malformed_job_route_shows_not_found_and_no_stale_live_badge(
    dashboard, secret, browser: Page
):
    daemon = dashboard()
    page = browser.page
    await page.goto(daemon.url + "/")
    await page.locator("#live-state", has_text="live").wait_for()
    for route in ("#/jobs/%E0%A4%A", "#/nowhere"):
        await page.evaluate("(route) => { location.hash = route; }", route)
        await page.locator("h1", has_text="Not found").wait_for()
        assert route in await page.locator("main").text_content()
        assert await page.locator("#live-state").text_content() != "live"
        await page.locator("a[href='#/jobs']", has_text="jobs list").wait_for()
    await screenshot(page, "not-found")


async def test_unknown_status_filter_shows_all_jobs_and_the_dropdown_agrees(
    dashboard, secret, browser: Page
):
    daemon = dashboard()
    await post_webhook(daemon, secret, training("statusjob-1", "processing"))
    page = browser.page
    await page.goto(daemon.url + "/#/jobs?status=foo")
    await page.locator("tr[data-job='statusjob-1']").wait_for()
    assert await page.locator("#status-filter").input_value() == ""
    await page.get_by_text('There is no status "foo"').wait_for()


async def post_many(daemon: Any, secret: str, bodies: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as session:
        slots = asyncio.Semaphore(8)

        async def post(body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            async with slots:
                response = await session.post(
                    daemon.url + WEBHOOK_PATH,
                    data=raw,
                    headers=signed_headers(secret, raw),
                )
                assert response.status == 200, await response.text()

        await asyncio.gather(*(post(body) for body in bodies))


async def test_show_more_pages_past_500_jobs_and_hides_at_the_end(
    dashboard, secret, browser: Page
):
    daemon = dashboard()
    count = 520  # the API serves 500 jobs at most per call
    bodies = [
        training(f"pagejob-{n:04d}", "succeeded", output=[]) for n in range(count)
    ]
    await post_many(daemon, secret, bodies)
    page = browser.page
    await page.goto(daemon.url + "/")
    rows = page.locator("tr[data-job]")
    more = page.locator("#more-jobs")
    shown = 50
    await page.wait_for_function(
        "(n) => document.querySelectorAll('tr[data-job]').length === n", arg=shown
    )
    while shown < count:
        await more.click()
        shown = min(shown + 50, count)
        await page.wait_for_function(
            "(n) => document.querySelectorAll('tr[data-job]').length === n", arg=shown
        )
    await more.wait_for(state="hidden")  # nothing more to show
    ids = await rows.evaluate_all("(rows) => rows.map((row) => row.dataset.job)")
    assert sorted(ids) == sorted(body["id"] for body in bodies)
