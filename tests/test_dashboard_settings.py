"""The dashboard's Cloud settings page in Chromium, against the daemon's
GET/PUT /api/cloud/providers/replicate: saved values survive a reload and a
restart of the daemon, and a refused value is shown next to its field."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.browser import PHONE, chromium_page, screenshot, tab_to

SAVED = {
    "#field-public-url": "https://train.example.com",
    "#field-webhook-allowed-ips": "34.82.0.0/16\n35.185.0.0/16",
    "#field-cost-limit-amount": "50",
    "#field-publish-s3-bucket": "trained-models",
    "#field-publish-s3-prefix": "loras/",
}


async def open_settings(page: Any, url: str) -> None:
    await page.goto(url + "/#/settings")
    await page.locator("#save-settings:enabled").wait_for()


async def assert_saved_values(page: Any) -> None:
    for selector, value in SAVED.items():
        assert await page.locator(selector).input_value() == value, selector
    assert await page.locator("#field-cost-limit-period").input_value() == "weekly"
    assert await page.locator("#field-cost-limit-action").input_value() == "block"
    webhook_url = await page.locator("#webhook-url").text_content()
    assert webhook_url.startswith("https://train.example.com/"), webhook_url
    await page.locator("#spend", has_text="of $50.00 (block)").wait_for()
    await page.locator("#spend", has_text="weekly period").wait_for()


async def test_settings_saved_in_the_page_survive_a_reload_and_a_daemon_restart(
    dashboard, browser
):
    daemon = dashboard()
    page = browser.page
    await open_settings(page, daemon.url)
    for selector, value in SAVED.items():
        await page.locator(selector).fill(value)
    await page.locator("#field-cost-limit-period").select_option("weekly")
    await page.locator("#field-cost-limit-action").select_option("block")
    await tab_to(page, "#save-settings")
    await page.keyboard.press("Enter")  # saving works from the keyboard too
    await page.locator("#save-result", has_text="Saved").wait_for()
    await assert_saved_values(page)
    await screenshot(page, "settings-saved")

    await page.reload()
    await open_settings(page, daemon.url)
    await assert_saved_values(page)

    assert daemon.stop() == 0
    restarted = dashboard()
    await open_settings(page, restarted.url)
    await assert_saved_values(page)


async def test_bad_cidr_is_refused_next_to_the_field_without_naming_it_again(
    dashboard, browser
):
    daemon = dashboard()
    page = browser.page
    await open_settings(page, daemon.url)
    field = page.locator("#field-webhook-allowed-ips")
    await field.fill("34.82.0.0/16\n10.0.0.300/8")
    async with page.expect_response(
        lambda r: r.url.endswith("/providers/replicate") and r.request.method == "PUT"
    ) as answer:
        await page.locator("#save-settings").click()
    refusal = await (await answer.value).json()
    assert (await answer.value).status == 422
    assert refusal["error"]["field"] == "webhook_allowed_ips"
    error = page.locator("#field-webhook-allowed-ips-error")
    await error.get_by_text("10.0.0.300/8").wait_for()
    # Shown under the field, the message does not name the field again.
    prefix = "webhook_allowed_ips: "
    assert refusal["error"]["message"].startswith(prefix)
    assert await error.text_content() == refusal["error"]["message"][len(prefix) :]
    assert await field.get_attribute("aria-invalid") == "true"
    assert (
        await page.evaluate("document.activeElement.id") == "field-webhook-allowed-ips"
    )
    await screenshot(page, "settings-bad-cidr")

    await page.reload()  # nothing of the refused change was kept
    await open_settings(page, daemon.url)
    assert await field.input_value() == ""


async def test_bad_cost_limit_is_refused_next_to_its_nested_field(dashboard, browser):
    daemon = dashboard()
    page = browser.page
    await open_settings(page, daemon.url)
    amount = page.locator("#field-cost-limit-amount")
    await amount.fill("-5")
    await page.locator("#save-settings").click()
    error = page.locator("#field-cost-limit-amount-error")
    await error.get_by_text("must be between 0").wait_for()
    assert "cost_limit.amount" not in await error.text_content()
    assert await amount.get_attribute("aria-invalid") == "true"
    assert await page.locator("#field-webhook-allowed-ips-error").is_hidden()


async def test_settings_fit_a_phone_screen_with_a_long_public_url(dashboard, tmp_path):
    daemon = dashboard()
    long_url = "https://hooks.example.com/" + "a-proxy-prefix-without-breaks-" * 6
    async with (
        aiohttp.ClientSession() as session,
        chromium_page(tmp_path / "phone-profile", PHONE) as page,
    ):
        for public_url in ("https://hooks.example.com", long_url):
            saved = await session.put(
                daemon.url + "/api/cloud/providers/replicate",
                json={"public_url": public_url},
            )
            assert saved.status == 200, await saved.text()
            await page.goto("about:blank")  # read the settings afresh
            await open_settings(page, daemon.url)
            await page.locator("#webhook-url", has_text=public_url).wait_for()
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth"
            )
            await screenshot(page, f"phone-settings-{len(public_url)}")
            assert overflow <= 0, f"{public_url}: {overflow} px wider than the screen"
