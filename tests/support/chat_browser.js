// Drives apps/chat's page in headless Chromium (browser.js): waits until the page says
// "connected", types TEXT into the message box, presses Send, and waits until TEXT comes
// back into the page's log.
// Usage: node chat_browser.js URL TEXT   -> prints {"status":..., "log":[...]} as JSON.
const [url, text] = process.argv.slice(2);

require("./browser")(async (page) => {
  await page.goto(url, { waitUntil: "load", timeout: 20000 });
  await page.waitForFunction(
    () => document.getElementById("status").textContent === "connected", { timeout: 20000 });
  await page.type("#msg", text);
  await page.click("#send");
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#log li")].some((li) => li.textContent === t),
    { timeout: 20000 }, text);
  return page.evaluate(() => ({
    status: document.getElementById("status").textContent,
    log: [...document.querySelectorAll("#log li")].map((li) => li.textContent),
    title: document.title,
  }));
});
