// Opens the web check page in headless Chromium, lets it connect, prints the result as JSON
// and saves a screenshot. Usage: node check_page.mjs URL SCREENSHOT
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
  await page.goto(url);
  await page.click("#connect");
  await page.waitForFunction(
    () => ["ok", "fail"].includes(document.querySelector("#result").className),
    null,
    { timeout: 30000 },
  );
  const result = await page.evaluate(() => ({
    className: document.querySelector("#result").className,
    text: document.querySelector("#result").textContent,
  }));
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(result));
} finally {
  await context.close();
}
