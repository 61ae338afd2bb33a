// Drives apps/chat's page in headless Chromium (Debian's /usr/bin/chromium, through npm's
// puppeteer-core): waits until the page says "connected", types TEXT into the message box,
// presses Send, and waits until TEXT comes back into the page's log.
// Usage: node chat_browser.js URL TEXT   -> prints {"status":..., "log":[...]} as JSON.
const puppeteer = require("puppeteer-core");

(async () => {
  const [url, text] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // root in a container: no sandbox; no GPU; /dev/shm may be small
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage();
    await page.goto(url, { waitUntil: "load", timeout: 20000 });
    await page.waitForFunction(
      () => document.getElementById("status").textContent === "connected", { timeout: 20000 });
    await page.type("#msg", text);
    await page.click("#send");
    await page.waitForFunction(
      (t) => [...document.querySelectorAll("#log li")].some((li) => li.textContent === t),
      { timeout: 20000 }, text);
    const out = await page.evaluate(() => ({
      status: document.getElementById("status").textContent,
      log: [...document.querySelectorAll("#log li")].map((li) => li.textContent),
      title: document.title,
    }));
    console.log(JSON.stringify(out));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
