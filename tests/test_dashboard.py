"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against
`replicate-webhookd serve` on loopback with the fake Replicate API.

The tests keep a screenshot of each page they check (tests/browser.py says where).
"""

from __future__ import annotations

from typing import Any

from tests.browser import PHONE, chromium_page, post_webhook, screenshot, tab_to
from tests.fakes.replicate import training as replicate_training

ADMIN_TOKEN = "dashboard-admin-token-0123456789"
# Allowed output hosts in tests are loopback only, so this URL ends `blocked_host`
# before any request is made: a failed delivery to retry, with no outside traffic.
BLOCKED_OUTPUT = "https://replicate.delivery/pbxt/abc/weights.tar"


def training(job_id: str, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "status": status,
        "model": "simpletuner/advanced-trainer",
        "created_at": "2026-12-04T10:00:00.000Z",
        "started_at": "2026-12-04T10:00:05.000Z",
        "input": {"hardware": "L40S"},
        **fields,
    }


async def test_page_asks_for_the_admin_token_once_and_keeps_it_for_the_session(
    dashboard, secret, browser
):
    daemon = dashboard(REPLICATE_WEBHOOKD_ADMIN_TOKEN=ADMIN_TOKEN)
    await post_webhook(daemon, secret, training("tokenjob1", "processing"))
    page = browser.page
    await page.goto(daemon.url + "/")  # the page itself needs no token
    dialog = page.locator("#token-dialog")
    await dialog.wait_for(state="visible")
    await screenshot(page, "token-dialog")

    await page.locator("#token-input").fill("wrong-token")
    await page.keyboard.press("Enter")
    await page.get_by_text("That token was refused").wait_for()
    await page.locator("#token-input").fill(ADMIN_TOKEN)
    await page.keyboard.press("Enter")
    await dialog.wait_for(state="hidden")
    await page.locator("tr[data-job='tokenjob1']").wait_for()
    assert await page.evaluate("Object.keys(localStorage).length") == 0
    stored = await page.evaluate("Object.values(sessionStorage)")
    assert stored == [ADMIN_TOKEN]

    await page.reload()  # same session: no second question
    await page.locator("tr[data-job='tokenjob1']").wait_for()
    assert not await dialog.is_visible()
    await page.locator("#live-state", has_text="live").wait_for()


async def test_token_outside_visible_ascii_is_refused_with_the_reason_and_dropped(
    dashboard, secret, browser
):
    daemon = dashboard(REPLICATE_WEBHOOKD_ADMIN_TOKEN=ADMIN_TOKEN)
    await post_webhook(daemon, secret, training("asciijob1", "processing"))
    page = browser.page
    await page.goto(daemon.url + "/")
    dialog = page.locator("#token-dialog")
    await dialog.wait_for(state="visible")
    # A header cannot carry "ö" or "—": fetch() would throw on every call.
    await page.locator("#token-input").fill("tökén—1")
    await page.keyboard.press("Enter")
    await page.locator("#token-error", has_text="visible ASCII").wait_for()
    assert await dialog.is_visible()
    assert await page.evaluate("sessionStorage.length") == 0
    await screenshot(page, "token-dialog-not-ascii")

    # One stored by an older page is thrown away, and the page asks again.
    await page.evaluate(
        "sessionStorage.setItem('replicate-webhookd.admin-token', 'tökén—1')"
    )
    await page.reload()
    await page.locator("#token-error", has_text="could not be sent").wait_for()
    await page.locator("#token-input").fill(ADMIN_TOKEN)
    await page.keyboard.press("Enter")
    await page.locator("tr[data-job='asciijob1']").wait_for()
    await page.locator("#live-state", has_text="live").wait_for()


async def test_validate_by_keyboard_shows_the_replicate_account(dashboard, browser):
    daemon = dashboard()
    page = browser.page
    await page.goto(daemon.url + "/#/settings")
    await page.locator("h1", has_text="Cloud settings").wait_for()
    await tab_to(page, "#validate")
    await page.keyboard.press("Enter")
    result = page.locator("#validate-result")
    await result.get_by_text("account acme").wait_for()
    assert "Acme Corp, Inc." in await result.text_content()
    await page.locator(".status-none", has_text="All Systems Operational").wait_for()
    await screenshot(page, "settings")


async def test_validate_shows_the_exact_reason_replicate_refused(
    dashboard, fake_replicate, browser
):
    daemon = dashboard(REPLICATE_API_TOKEN="r8_not_the_right_token")
    page = browser.page
    await page.goto(daemon.url + "/#/settings")
    await page.locator("#validate").click()
    result = page.locator("#validate-result")
    await result.get_by_text("replicate_invalid_token").wait_for()
    assert "Token check failed" in await result.text_content()


async def test_webhook_shows_up_live_in_the_open_job_page(dashboard, secret, browser):
    daemon = dashboard()
    job_id = "livejob000000000000000001"
    await post_webhook(
        daemon, secret, training(job_id, "starting", logs="step 1/100\n")
    )
    page = browser.page
    await page.goto(f"{daemon.url}/#/jobs/{job_id}")
    await page.locator("#job-logs", has_text="step 1/100").wait_for()
    await page.locator("#live-state", has_text="live").wait_for()
    assert await page.locator(".history tbody tr").count() == 1

    # Within a second of the webhook's answer, log line and state are on the page.
    await post_webhook(
        daemon,
        secret,
        training(job_id, "processing", logs="step 1/100\nstep 2/100 loss=0.25\n"),
    )
    await page.locator("#job-logs", has_text="step 2/100 loss=0.25").wait_for(
        timeout=1000
    )
    await page.locator(".job-head .badge", has_text="processing").wait_for(timeout=1000)
    assert await page.locator(".history tbody tr").count() == 2
    assert (await page.locator("#job-logs").text_content()).count("step 1/100") == 1
    await page.locator("#cancel-job").wait_for()  # running: it can be cancelled
    await screenshot(page, "job-page")


async def test_jobs_list_shows_new_jobs_live_and_filters_by_status(
    dashboard, secret, browser
):
    daemon = dashboard()
    await post_webhook(daemon, secret, training("listjob-ok", "succeeded", output=[]))
    page = browser.page
    await page.goto(daemon.url + "/")
    row = page.locator("tr[data-job='listjob-ok']")
    await row.wait_for()
    assert "L40S" in await row.text_content()

    await post_webhook(daemon, secret, training("listjob-running", "processing"))
    await page.locator("tr[data-job='listjob-running']").wait_for(timeout=1000)
    await screenshot(page, "jobs-list")

    await page.locator("#status-filter").select_option("processing")
    await page.wait_for_url("**/#/jobs?status=processing")
    await page.locator("tr[data-job='listjob-running']").wait_for()
    await row.wait_for(state="detached")


async def test_keyboard_opens_a_job_and_retries_its_failed_delivery(
    dashboard, secret, browser
):
    daemon = dashboard()
    job_id = "retryjob00000000000000001"
    await post_webhook(
        daemon, secret, training(job_id, "succeeded", output=[BLOCKED_OUTPUT])
    )
    page = browser.page
    await page.goto(daemon.url + "/")
    await page.locator(f"tr[data-job='{job_id}']").wait_for()
    await tab_to(page, f"a[href='#/jobs/{job_id}']")
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"**/#/jobs/{job_id}")
    retry = page.locator("button.retry")
    await retry.wait_for()  # the local copy ended blocked_host
    assert "blocked_host" in await page.locator(".deliveries").text_content()
    await screenshot(page, "job-page-failed-delivery")

    await tab_to(page, "button.retry")
    async with page.expect_response(lambda r: r.url.endswith("/retry")) as answer:
        await page.keyboard.press("Enter")
    assert (await answer.value).status == 200
    await page.get_by_text("was queued again").wait_for()


async def test_cancel_asks_first_and_cancels_only_when_confirmed_by_keyboard(
    dashboard, secret, fake_replicate, browser
):
    job_id = "canceljob0000000000000001"
    fake_replicate.trainings[job_id] = replicate_training(job_id, "processing")
    daemon = dashboard()
    await post_webhook(daemon, secret, training(job_id, "processing"))
    page = browser.page
    await page.goto(f"{daemon.url}/#/jobs/{job_id}")
    await page.locator("#cancel-job").click()
    dialog = page.locator("#cancel-dialog")
    await dialog.wait_for(state="visible")  # it asks first...
    # ...with the focus on the choice that changes nothing; Escape keeps the job.
    assert await page.evaluate("document.activeElement.id") == "keep-job"
    await screenshot(page, "job-cancel-confirm")
    await page.keyboard.press("Escape")
    await dialog.wait_for(state="hidden")
    await page.locator(".job-head .badge", has_text="processing").wait_for()
    assert not fake_replicate.calls(f"/trainings/{job_id}/cancel")

    await tab_to(page, "#cancel-job")
    await page.keyboard.press("Enter")
    await dialog.wait_for(state="visible")
    await page.keyboard.press("Tab")  # to "Cancel job" in the dialog
    assert await page.evaluate("document.activeElement.id") == "confirm-cancel"
    await page.keyboard.press("Enter")
    await page.locator(".job-head .badge", has_text="canceled").wait_for()
    await page.locator("#cancel-job").wait_for(state="detached")
    assert fake_replicate.calls(f"/trainings/{job_id}/cancel")


async def test_pages_fit_a_phone_screen(dashboard, secret, tmp_path):
    daemon = dashboard()
    job_id = "phonejob00000000000000001"
    await post_webhook(daemon, secret, training(job_id, "processing", logs="x\n"))
    async with chromium_page(tmp_path / "phone-profile", PHONE) as page:
        for name, path, ready in (
            ("phone-jobs", "/", f"tr[data-job='{job_id}']"),
            ("phone-job", f"/#/jobs/{job_id}", ".history tbody tr"),
            ("phone-settings", "/#/settings", "#spend-chart"),
        ):
            await page.goto(daemon.url + path)
            await page.locator(ready).first.wait_for()
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth"
            )
            await screenshot(page, name)
            assert overflow <= 0, f"{name}: {overflow} px wider than the screen"
