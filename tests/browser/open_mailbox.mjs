// For `deno task bench --only web`: signs in to the web app in headless
// Chromium with a key file (first visit), then reloads the page RUNS times
// and measures how long a big mailbox takes to show its first rows.
// Usage: node open_mailbox.mjs APP_URL ADDRESS KEY_FILE RUNS
// Prints one JSON line: { runs: [{ reloadMs, openMs, rows, total }] }.
import { chromium } from "playwright-core";

const [url, address, keyFile, runs] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run"],
});
const result = { runs: [] };
try {
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(120_000);
  const online = () =>
    page.getByTestId("connection").filter({ hasText: /^Online/ }).waitFor();
  await page.goto(url);
  await online();
  await page.getByText("Sign in with a key file").click();
  await page.fill("#key-address", address);
  await page.setInputFiles("#key-file", keyFile);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByRole("button", { name: "Continue to my mail" }).click();
  await page.locator(".row:not(.placeholder)").first().waitFor();
  for (let i = 0; i < Number(runs); i++) {
    const reloadStart = Date.now();
    await page.reload();
    // Still signed in: the app opens the mailbox again by itself.
    await online();
    const onlineAt = Date.now();
    await page.locator(".row:not(.placeholder)").first().waitFor();
    const end = Date.now();
    const rows = await page.locator(".row:not(.placeholder)").count();
    const total = Number(
      await page.locator(".rows").getAttribute("aria-rowcount"),
    );
    result.runs.push({
      reloadMs: end - reloadStart,
      openMs: end - onlineAt,
      rows,
      total,
    });
  }
} catch (error) {
  result.failure = String(error?.stack ?? error);
} finally {
  console.log(JSON.stringify(result));
  await browser.close();
}
