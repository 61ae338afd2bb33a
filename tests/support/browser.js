// Runs fn(page) in headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM, through
// npm's puppeteer-core) and prints what it returns as JSON; on a failure prints the stack
// on stderr and exits 1. Shared by the specs' browser scripts.
const puppeteer = require("puppeteer-core");

module.exports = function run(fn) {
  (async () => {
    const browser = await puppeteer.launch({
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      // root in a container: no sandbox; no GPU; /dev/shm may be small
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    });
    try {
      console.log(JSON.stringify(await fn(await browser.newPage())));
    } finally {
      await browser.close();
    }
  })().catch((e) => {
    console.error(String(e && e.stack || e));
    process.exit(1);
  });
};
