// Opens the web app in headless Chromium, waits until it is connected, prints
// the connection line as JSON and saves a screenshot.
// Usage: node check_page.mjs URL SCREENSHOT
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(
  mkdtempSync(join(tmpdir(), "amtp-chromium-")),
  {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  },
);
try {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await page.goto(url);
  const status = page.getByTestId("connection");
  await status.filter({ hasText: /Online|Offline/ }).waitFor({
    timeout: 30000,
  });
  const result = {
    status: await status.textContent(),
    title: await page.title(),
    errors,
  };
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(result));
} finally {
  await context.close();
}
