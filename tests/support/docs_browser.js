// Drives a /docs page in headless Chromium (browser.js): waits until the operations are
// listed, then for each request given fills the operation's form (inputs by name, the body
// textarea if given), presses Send and waits for the answer. Console errors, page errors
// and failed requests are collected.
// Usage: node docs_browser.js URL REQUESTS_JSON, REQUESTS_JSON a list of
//   {"op": operationId, "values": {name: value}, "body": text}
// -> prints {"title", "tags", "ops", "deprecated", "results": [{"status", "body",
// "headers"}], "errors": [...]} as JSON.
const [url, requests] = process.argv.slice(2);

require("./browser")(async (page) => {
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push("console: " + m.text()); });
  page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
  page.on("requestfailed", (r) => errors.push("requestfailed: " + r.url()));
  await page.goto(url, { waitUntil: "load", timeout: 20000 });
  await page.waitForSelector("details.op", { timeout: 20000 });
  const results = [];
  for (const req of JSON.parse(requests)) {
    const sel = `details[id="${req.op}"]`;   // the first, under its first tag
    await page.$eval(sel, (d) => { d.open = true; });
    for (const [name, value] of Object.entries(req.values || {})) {
      await page.$eval(`${sel} input[name="${name}"]`, (i) => { i.value = ""; });
      await page.type(`${sel} input[name="${name}"]`, value);
    }
    if (req.body !== undefined) {
      await page.$eval(`${sel} textarea`, (t, v) => { t.value = v; }, req.body);
    }
    await page.$eval(sel, (d) => d.querySelector(".result").replaceChildren());
    await page.click(`${sel} button.send`);
    await page.waitForSelector(`${sel} .res-status`, { timeout: 20000 });
    results.push(await page.$eval(sel, (d) => ({
      status: Number(d.querySelector(".res-status").textContent),
      body: d.querySelector(".res-body").textContent,
      headers: d.querySelector(".res-headers").textContent,
    })));
  }
  const out = await page.evaluate(() => ({
    title: document.title,
    tags: [...document.querySelectorAll("section.tag > h2")].map((h) => h.textContent),
    ops: [...document.querySelectorAll("details.op")].map((d) => d.dataset.op),
    deprecated: [...document.querySelectorAll("details.op.deprecated")].map((d) => d.dataset.op),
  }));
  out.results = results;
  out.errors = errors;
  return out;
});
