// The web app end to end in headless Chromium, driven by webapp_test.ts:
// an admin signs in with the bootstrap key, adds a domain and invites two
// people; each accepts in a browser context of their own (keys made there);
// Alice writes to Bob with an attachment, Bob sees it live, opens it,
// downloads the attachment byte for byte, sees the lock and the verified
// signature, and replies (threaded). Bob's browser has no WebTransport (it
// falls back to WebSocket, through the test's proxy): his connection is cut
// while mail arrives, and restored; then the server restarts and both apps
// reconnect by themselves.
//
// Usage: node webapp.mjs APP_URL BOB_URL ADMIN_KEY_FILE OUT_DIR
// Asks the test for actions with "@@ACTION name" lines and waits for "ok" on
// standard input; prints "@@RESULT {json}" at the end.
import { mkdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { randomBytes } from "node:crypto";
import { chromium } from "playwright-core";

const [appUrl, bobUrl, adminKey, outDir] = process.argv.slice(2);
mkdirSync(outDir, { recursive: true });
const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const TIMEOUT = 30_000;
const result = { steps: [], errors: [] };

function step(name) {
  result.steps.push(name);
  console.log(`@@STEP ${name}`);
}

async function action(name) {
  console.log(`@@ACTION ${name}`);
  const { value } = await input.next();
  if (value !== "ok") throw new Error(`action ${name}: ${value}`);
}

let shots = 0;
async function shot(page, name) {
  shots++;
  await page.screenshot({
    path: `${outDir}/${String(shots).padStart(2, "0")}-${name}.png`,
    fullPage: true,
  });
}

function watch(page, who) {
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => result.errors.push(`${who}: ${e}`));
  page.on("console", (m) => {
    // Failed reconnects while the connection is cut or the server restarts
    // are expected, and so are the policy's refusals of the hostile HTML
    // message (counted; what they protect is checked); anything else is an
    // error.
    if (m.type() !== "error") return;
    if (/violates the following Content Security Policy/.test(m.text())) {
      result.cspRefusals = (result.cspRefusals ?? 0) + 1;
    } else if (
      !/WebSocket connection to .* failed|Failed to establish a connection to https:/
        .test(m.text())
    ) result.errors.push(`${who} console: ${m.text()}`);
  });
}

async function online(page, transport) {
  await page.getByTestId("connection").filter({
    hasText: new RegExp(`^Online · ${transport}$`),
  }).waitFor({ timeout: TIMEOUT * 2 });
}

const browser = await chromium.launch({
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
});
try {
  // The admin.
  const adminContext = await browser.newContext();
  const admin = await adminContext.newPage();
  watch(admin, "admin");
  await admin.goto(appUrl);
  await online(admin, "WebTransport");
  await shot(admin, "welcome");
  await admin.fill("#admin-name", "admin");
  await admin.setInputFiles("#admin-key", adminKey);
  await admin.getByRole("button", { name: "Sign in as admin", exact: true })
    .click();
  await admin.getByRole("heading", { name: "Admin: admin" }).waitFor();
  await admin.getByTestId("sysinfo").waitFor();
  step("admin signed in with the bootstrap key");
  await admin.fill("#dom-name", "example.org");
  await admin.getByRole("button", { name: "Add domain" }).click();
  await admin.getByRole("table", { name: "Domains" }).getByText("example.org")
    .waitFor();
  step("domain added");
  const invite = async (address, name) => {
    await admin.fill("#ainv-address", address);
    await admin.fill("#ainv-name", name);
    await admin.getByRole("button", { name: "Create invitation" }).click();
    const box = admin.getByTestId("invitation").filter({ hasText: address });
    await box.waitFor();
    return {
      code: await box.getByTestId("invitation-code").textContent(),
      link: await box.getByTestId("invitation-link").getAttribute("href"),
    };
  };
  const aliceInvite = await invite("alice@example.org", "Alice");
  const bobInvite = await invite("bob@example.org", "Bob");
  await admin.getByRole("table", { name: "Open invitations" })
    .getByText("bob@example.org").waitFor();
  await shot(admin, "admin-invitations");
  step("two invitations made");

  // Each person joins in a browser of their own.
  const join = async (page, url, address) => {
    await page.goto(url);
    await page.getByRole("heading", { name: `Join as ${address}` }).waitFor({
      timeout: TIMEOUT,
    });
    await shot(page, `join-${address.split("@")[0]}`);
    await page.getByRole("button", { name: "Create my keys and join" }).click();
    return await keysReady(page, address);
  };
  // After keys were made in the browser: the backup, then the mailbox;
  // what IndexedDB holds of the login key.
  const keysReady = async (page, address) => {
    await page.getByRole("heading", { name: "Your keys are ready" }).waitFor({
      timeout: TIMEOUT,
    });
    const download = page.waitForEvent("download");
    await page.getByRole("button", { name: "Download the backup file" })
      .click();
    const backup = readFileSync(await (await download).path(), "utf8");
    if (!backup.includes("BEGIN PRIVATE KEY")) {
      throw new Error("the backup holds no private key");
    }
    await shot(page, `backup-${address.split("@")[0]}`);
    await page.getByLabel(/I saved the backup/).check();
    await page.getByRole("button", { name: "Continue to my mail" }).click();
    await page.getByRole("heading", { name: "Inbox" }).waitFor({
      timeout: TIMEOUT,
    });
    // The login key is in IndexedDB, and cannot be read out.
    return await page.evaluate(() =>
      new Promise((resolve, reject) => {
        const open = indexedDB.open("amtp");
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const get = open.result.transaction("accounts").objectStore(
            "accounts",
          ).getAll();
          get.onsuccess = () =>
            resolve(get.result.map((a) => ({
              address: a.address,
              extractable: a.login.privateKey.extractable,
              type: a.login.privateKey.type,
            })));
        };
      })
    );
  };
  const aliceContext = await browser.newContext({ acceptDownloads: true });
  const alice = await aliceContext.newPage();
  watch(alice, "alice");
  result.aliceKeys = await join(alice, aliceInvite.link, "alice@example.org");
  await online(alice, "WebTransport");
  step("alice joined over WebTransport; her keys were made in her browser");

  const bobContext = await browser.newContext({ acceptDownloads: true });
  // A browser without WebTransport: the app falls back to WebSocket.
  await bobContext.addInitScript(() => {
    Object.defineProperty(globalThis, "WebTransport", { value: undefined });
  });
  const bob = await bobContext.newPage();
  watch(bob, "bob");
  result.bobKeys = await join(
    bob,
    `${bobUrl}#invite=${bobInvite.code}`,
    "bob@example.org",
  );
  await online(bob, "WebSocket");
  step("bob joined over WebSocket (no WebTransport in his browser)");

  // Alice writes to Bob with an attachment.
  const attachment = randomBytes(300_000);
  const compose = async (page, fill) => {
    await page.getByRole("button", { name: "Compose", exact: true }).click();
    await fill();
    await page.getByTestId("will-encrypt").waitFor({ timeout: TIMEOUT });
  };
  const sendEncrypted = async (page) => {
    await page.getByRole("button", { name: /Send encrypted/ }).click();
    // Sent: the compose window closes, and the notice says how.
    await page.locator("#to").waitFor({ state: "detached", timeout: TIMEOUT });
    await page.getByTestId("notice").filter({
      hasText: "Sent, encrypted end to end.",
    }).waitFor({ timeout: TIMEOUT });
  };
  await compose(alice, async () => {
    await alice.fill("#to", "bob@example.org");
    await alice.fill("#subject", "Hello Bob");
    await alice.fill("#body", "The figures are attached.");
    await alice.setInputFiles("#files", {
      name: "figures.bin",
      mimeType: "application/octet-stream",
      buffer: attachment,
    });
  });
  await shot(alice, "compose-encrypted");
  await sendEncrypted(alice);
  step("alice sent an encrypted message with an attachment");

  // Bob sees it appear without reloading, and opens it.
  const row = (page, text) => page.locator(".row").filter({ hasText: text });
  await row(bob, "Hello Bob").waitFor({ timeout: TIMEOUT });
  await row(bob, "Hello Bob").getByRole("button").click();
  const reader = bob.locator(".reader");
  await reader.getByTestId("body").filter({
    hasText: "The figures are attached.",
  }).waitFor({ timeout: TIMEOUT });
  result.encryption = await reader.getByTestId("encryption").textContent();
  result.signature = await reader.getByTestId("signature").textContent();
  const download = bob.waitForEvent("download");
  await reader.getByRole("button", { name: "Download figures.bin" }).click();
  const got = readFileSync(await (await download).path());
  result.attachmentSame = Buffer.compare(got, attachment) === 0;
  result.attachmentBytes = got.length;
  await shot(bob, "bob-reads");
  step("bob read it live, checked lock and signature, downloaded the file");

  // Bob replies; the reply threads under Alice's message.
  await bob.getByRole("toolbar", { name: "Message actions" })
    .getByRole("button", { name: "Reply", exact: true }).click();
  await bob.getByTestId("will-encrypt").waitFor({ timeout: TIMEOUT });
  await bob.fill("#body", "Thanks, got them.");
  await sendEncrypted(bob);
  // In Alice's inbox the reply opens as the thread: her message and the reply.
  await row(alice, "Re: Hello Bob").waitFor({ timeout: TIMEOUT });
  await row(alice, "Re: Hello Bob").getByRole("button").click();
  await alice.locator(".reader .message").nth(1).waitFor({ timeout: TIMEOUT });
  result.threadMessages = await alice.locator(".reader .message").count();
  // The first message is folded (read); it opens with its header.
  await alice.locator(".reader .message").first().locator("header button")
    .click();
  await alice.locator(".reader").getByText("The figures are attached.")
    .waitFor();
  result.threadProblems = await alice.locator(".reader [role=alert]").count();
  // Her own message: her own master key is known here, not "seen first".
  result.ownSignature = await alice.locator(".reader .message").first()
    .getByTestId("signature").textContent();
  await alice.locator(".reader").getByText("Thanks, got them.").waitFor();
  await shot(alice, "alice-thread");
  step("bob's reply is threaded under alice's message");

  // Bob's connection is cut while two messages arrive, then restored.
  await action("cut");
  await bob.getByTestId("connection").filter({ hasText: /Reconnecting/ })
    .waitFor({ timeout: TIMEOUT });
  await shot(bob, "bob-cut");
  for (const n of [1, 2]) {
    await compose(alice, async () => {
      await alice.fill("#to", "bob@example.org");
      await alice.fill("#subject", `While away ${n}`);
      await alice.fill("#body", `number ${n}`);
    });
    await sendEncrypted(alice);
  }
  await action("restore");
  await online(bob, "WebSocket");
  for (const n of [1, 2]) {
    await row(bob, `While away ${n}`).waitFor({ timeout: TIMEOUT });
  }
  // Give late pushes a moment to double anything, then count.
  await bob.waitForTimeout(1500);
  result.afterCut = {
    away1: await row(bob, "While away 1").count(),
    away2: await row(bob, "While away 2").count(),
    hello: await row(bob, "Hello Bob").count(),
    rows: await bob.locator(".row:not(.placeholder)").count(),
  };
  await shot(bob, "bob-caught-up");
  step("bob caught up after the cut: nothing lost, nothing doubled");

  // HTML mail from someone without keys: sanitized, in a sandboxed frame,
  // remote images blocked; and a reply to them warns before going in clear.
  const remoteRequests = [];
  // A remote image the frame's policy blocks is reported as a request that
  // failed with "csp" (ERR_BLOCKED_BY_CSP), never sent; anything else left
  // the browser.
  const blocked = [];
  bob.on("requestfinished", (r) => {
    if (r.url().includes("remote.example")) remoteRequests.push(r.url());
  });
  bob.on("requestfailed", (r) => {
    if (!r.url().includes("remote.example")) return;
    if (/^(csp|net::ERR_BLOCKED_BY_CSP)$/.test(r.failure()?.errorText ?? "")) {
      blocked.push(r.url());
    } else remoteRequests.push(`${r.url()}: ${r.failure()?.errorText}`);
  });
  await bob.evaluate(() => {
    globalThis.pwned = [];
    addEventListener("message", (e) => {
      if (e.data?.pwned) globalThis.pwned.push(e.data.pwned);
    });
  });
  await action("html-mail");
  await row(bob, "HTML test").waitFor({ timeout: TIMEOUT });
  await row(bob, "HTML test").getByRole("button").click();
  const frame = bob.frameLocator('iframe[title="Message content"]');
  await frame.locator("b").filter({ hasText: "bold" }).waitFor();
  await bob.getByText("Remote images are blocked").waitFor();
  result.plainLine = await bob.locator(".reader").getByTestId("encryption")
    .textContent();
  await bob.waitForTimeout(1000);
  result.html = {
    pwned: await bob.evaluate(() => globalThis.pwned),
    remoteRequests,
    blocked: blocked.length > 0,
    scriptsInFrame: await frame.locator("body script").count(),
  };
  await shot(bob, "bob-html-mail");
  await bob.getByRole("toolbar", { name: "Message actions" })
    .getByRole("button", { name: "Reply", exact: true }).click();
  await bob.getByTestId("will-not-encrypt").waitFor({ timeout: TIMEOUT });
  result.clearSendBlocked = await bob.getByRole("button", {
    name: "Send",
    exact: true,
  }).isDisabled();
  await shot(bob, "bob-reply-unencrypted-notice");
  await bob.getByRole("button", { name: "Discard" }).click();
  step("html mail sanitized and sandboxed; a reply in clear needs consent");

  // Flag, move, delete, search.
  const folder = (name) => bob.locator(`button[data-folder="${name}"]`);
  await bob.getByRole("toolbar", { name: "Message actions" })
    .getByRole("button", { name: "Flag", exact: true }).click();
  await row(bob, "HTML test").locator('[title="Flagged"]').waitFor();
  await row(bob, "While away 1").getByRole("button").click();
  await bob.locator(".reader").getByTestId("body").filter({
    hasText: "number 1",
  }).waitFor();
  await bob.selectOption("#move-to", "archive");
  await row(bob, "While away 1").waitFor({ state: "detached" });
  await row(bob, "While away 2").getByRole("button").click();
  await bob.locator(".reader").getByTestId("body").filter({
    hasText: "number 2",
  }).waitFor();
  await bob.getByRole("toolbar", { name: "Thread actions" }).getByRole(
    "button",
    { name: "Delete" },
  ).click();
  await row(bob, "While away 2").waitFor({ state: "detached" });
  await folder("archive").click();
  await row(bob, "While away 1").waitFor();
  await folder("trash").click();
  await row(bob, "While away 2").waitFor();
  await bob.fill("#search", "HTML");
  await bob.press("#search", "Enter");
  await bob.getByRole("heading", { name: "Search: HTML" }).waitFor();
  await row(bob, "HTML test").waitFor();
  result.searchRows = await bob.locator(".row:not(.placeholder)").count();
  await shot(bob, "bob-search");
  await folder("inbox").click();
  await row(bob, "Hello Bob").waitFor();
  step("flag, move to archive, delete to trash, search");

  // The server restarts; both apps reconnect by themselves.
  await action("restart");
  await alice.getByTestId("connection").filter({ hasText: /Online/ }).waitFor({
    timeout: TIMEOUT * 2,
  });
  await online(bob, "WebSocket");
  await compose(alice, async () => {
    await alice.fill("#to", "bob@example.org");
    await alice.fill("#subject", "After the restart");
    await alice.fill("#body", "still here");
  });
  await sendEncrypted(alice);
  await row(bob, "After the restart").waitFor({ timeout: TIMEOUT });
  result.aliceTransport = await alice.getByTestId("connection").textContent();
  await shot(bob, "bob-after-restart");
  step("both apps reconnected after the restart; mail flows live again");

  // Signing in again, many times: the inbox must show every time (a reply
  // that came back before the list subscribed to its store used to leave it
  // on "Loading…").
  const inboxShown = async (page) => {
    await page.getByRole("heading", { name: "Inbox" }).waitFor();
    await row(page, "Hello Bob").waitFor({ timeout: 5000 });
    await page.getByText("Loading…", { exact: true }).waitFor({
      state: "detached",
      timeout: 5000,
    });
  };
  result.signedInAgain = 0;
  for (let i = 0; i < 15; i++) {
    await bob.getByRole("button", { name: "Sign out" }).click();
    await bob.getByRole("button", { name: "Sign in as bob@example.org" })
      .click();
    await inboxShown(bob);
    result.signedInAgain++;
  }
  // A new tab of a browser signed in opens the mailbox by itself; signing
  // out there signs the other tabs out too (they share the token).
  for (let i = 0; i < 5; i++) {
    const tab = await bobContext.newPage();
    watch(tab, "bob (new tab)");
    await tab.goto(bobUrl);
    await inboxShown(tab);
    if (i === 4) {
      await tab.getByRole("button", { name: "Sign out" }).click();
      await bob.getByTestId("notice").filter({
        hasText: "bob@example.org was signed out in another tab.",
      }).waitFor();
      await bob.getByRole("button", { name: "Sign in as bob@example.org" })
        .click();
      await inboxShown(bob);
    }
    await tab.close();
    result.signedInAgain++;
  }
  step("signed in again 20 times, the inbox shown each time");

  // The admin console sees the two users and their devices.
  await admin.locator("section").filter({
    has: admin.getByRole("heading", { name: "Users", exact: true }),
  }).getByRole("button", { name: "Refresh" }).click();
  await admin.getByRole("table", { name: "Users" }).getByText(
    "bob@example.org",
  ).waitFor({ timeout: TIMEOUT });
  result.users = await admin.getByRole("table", { name: "Users" })
    .locator("tbody tr").count();
  await admin.getByRole("button", { name: "Check DNS records" }).click();
  await admin.getByTestId("notice").filter({ hasText: "DNS checked" }).waitFor({
    timeout: TIMEOUT,
  });
  await shot(admin, "admin-users");
  step("the admin console lists the users");

  // Self-registration: refused on a domain that is not open for it; on a
  // domain the admin opened, a new address made in the browser.
  await admin.fill("#dom-name", "open.example");
  await admin.getByLabel("open for self-registration").check();
  await admin.getByRole("button", { name: "Add domain" }).click();
  await admin.getByRole("table", { name: "Domains" }).getByText("open.example")
    .waitFor();
  const carolContext = await browser.newContext({ acceptDownloads: true });
  const carol = await carolContext.newPage();
  watch(carol, "carol");
  await carol.goto(appUrl);
  await online(carol, "WebTransport");
  await carol.locator("summary").filter({ hasText: "Register a new address" })
    .click();
  const register = async (address) => {
    await carol.fill("#reg-address", address);
    await carol.fill("#reg-name", "Carol");
    await carol.getByRole("button", { name: "Create my keys and register" })
      .click();
  };
  await register("carol@example.org");
  result.registrationClosed = await carol.getByTestId("notice").filter({
    hasText: "Could not register",
  }).textContent();
  await register("carol@open.example");
  result.carolKeys = await keysReady(carol, "carol@open.example");
  await shot(carol, "registered");
  await carolContext.close();
  step("carol registered on a domain open for it, not on one closed");
  // Its Modules view names each module's source or author key and its rights.
  result.messagesModule = await admin.getByRole("table", { name: "Modules" })
    .locator("tbody tr").filter({
      has: admin.getByRole("cell", { name: "messages", exact: true }),
    }).textContent();

  // Alice adds a second browser: a device invitation from Settings; the new
  // browser makes its own keys and waits; Alice compares codes and approves.
  await alice.getByRole("button", { name: "Settings", exact: true }).click();
  await alice.getByRole("button", { name: "Invite a device" }).click();
  const deviceCode = await alice.getByTestId("device-invite").textContent();
  const phoneContext = await browser.newContext({ acceptDownloads: true });
  const phone = await phoneContext.newPage();
  watch(phone, "alice's second browser");
  await phone.goto(`${appUrl}#invite=${deviceCode}`);
  await phone.getByRole("heading", {
    name: "Add this browser to alice@example.org",
  }).waitFor();
  await phone.fill("#inv-label", "web: second browser");
  await phone.getByRole("button", { name: "Create my keys and join" }).click();
  const shown = await phone.getByTestId("device-code").filter({
    hasText: /\S/,
  }).textContent();
  await shot(phone, "second-browser-waits");
  await alice.getByRole("button", { name: "Mail", exact: true }).click();
  await alice.getByRole("button", { name: "Settings", exact: true }).click();
  const pending = alice.getByTestId("pending-code").filter({ hasText: /\S/ });
  result.codesMatch = (await pending.textContent()) === shown;
  await alice.getByRole("button", { name: "Approve (the codes match)" })
    .click();
  await alice.getByTestId("notice").filter({ hasText: /^Approved/ }).waitFor();
  await alice.locator("tr[data-device]").filter({ hasText: "listed" }).nth(1)
    .waitFor();
  result.aliceDevices = await alice.locator("tr[data-device]").count();
  await shot(alice, "settings-devices");
  step("alice approved her second browser after comparing codes");

  // The service worker shows a notification for a push when no tab is open:
  // a push event delivered to it (DevTools protocol, as a push service would).
  const swContext = await browser.newContext();
  const origin = new URL(appUrl).origin;
  await swContext.grantPermissions(["notifications"], { origin });
  const sw = await swContext.newPage();
  watch(sw, "service worker page");
  const cdp = await swContext.newCDPSession(sw);
  const registrations = [];
  cdp.on("ServiceWorker.workerRegistrationUpdated", (e) => {
    registrations.push(...e.registrations);
  });
  await cdp.send("ServiceWorker.enable");
  await sw.goto(appUrl);
  await sw.evaluate(() =>
    Promise.race([
      navigator.serviceWorker.ready.then(() => true),
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error("no service worker")), 10_000)
      ),
    ])
  );
  const registration = registrations.find((r) =>
    r.scopeURL.startsWith(origin) && !r.isDeleted
  );
  await sw.goto("about:blank");
  for (const [n, payload] of [{
    v: 1,
    event: "message_new",
    account: "bob@example.org",
    count: 1,
    from: "alice@example.org",
    encrypted: true,
    subject: "never shown for encrypted mail",
  }, {
    v: 1,
    event: "message_new",
    account: "carol@example.org",
    count: 3,
    from: "dave@example.org",
    encrypted: false,
    subject: "Lunch",
  }].entries()) {
    await cdp.send("ServiceWorker.deliverPushMessage", {
      origin,
      registrationId: registration.registrationId,
      data: JSON.stringify(payload),
    });
    void n;
  }
  await sw.goto(`${appUrl}#`);
  await sw.waitForTimeout(500);
  result.notifications = await sw.evaluate(async () =>
    (await (await navigator.serviceWorker.ready).getNotifications()).map((
      n,
    ) => ({ title: n.title, body: n.body, tag: n.tag }))
  );
  step("the service worker turned pushes into notifications");

  // With the server out of reach, the app still opens (its files kept by the
  // service worker) and shows the mail read lately, decrypted here.
  await action("cut");
  await bob.reload();
  await bob.getByRole("heading", { name: "The server cannot be reached" })
    .waitFor({ timeout: TIMEOUT });
  await bob.getByRole("button", { name: /encrypted message/ }).first().click();
  result.offlineBody = await bob.getByTestId("offline-body").textContent();
  await shot(bob, "bob-offline");
  await action("restore");
  step("offline: the app opens from its cache and shows mail read lately");
} catch (error) {
  result.failure = String(error?.stack ?? error);
  for (const context of browser.contexts()) {
    for (const page of context.pages()) {
      await shot(page, "failure").catch(() => {});
    }
  }
} finally {
  console.log(`@@RESULT ${JSON.stringify(result)}`);
  await browser.close().catch(() => {});
  // Standard input stays open (the action channel): end here.
  process.exit(0);
}
