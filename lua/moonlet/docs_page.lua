-- The /docs page: an HTML shell, its script and its style, built once per app load (see
-- openapi.lua). The script fetches the OpenAPI document and renders it: operations grouped
-- by tag, each with its parameters, body and response schemas, and a form that sends a
-- request with fetch() and shows the status, headers and body. No inline script or style
-- and nothing from another origin, so the page works offline and under the strict
-- Content-Security-Policy it is served with.
local core = require "moonlet.core"

local gsub = string.gsub

local _M = {}

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }
local function esc(s) return (gsub(s, "[&<>\"']", ESC)) end

-- html(app, docs_path) -> the page
function _M.html(app, d)
  return '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    .. '<meta name="viewport" content="width=device-width, initial-scale=1">'
    .. '<link rel="icon" href="data:,">'
    .. "<title>" .. esc(app.title) .. " - docs</title>"
    .. '<link rel="stylesheet" href="' .. esc(d) .. '/app.css">'
    .. '<script src="' .. esc(d) .. '/app.js" defer></script></head>'
    .. '<body><header><h1 id="title">' .. esc(app.title) .. '</h1><p id="info"></p></header>'
    .. '<main id="ops"><p id="loading">loading the OpenAPI document...</p></main></body></html>\n'
end

local JS = [==[
(() => {
const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

// el("div", {class: "x", onclick: f}, child, ...): an element; strings become text
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid != null) e.append(kid);
  return e;
}

let doc;
const seen = new Set();
function deref(s) {
  while (s && s.$ref && s.$ref.startsWith("#/")) {
    s = s.$ref.slice(2).split("/").reduce((o, k) => o && o[k], doc);
  }
  return s || {};
}

// A value that fits schema s: its example, its default, else one made from its type
// (objects: the required properties and those with an example or a default).
function example(s, depth) {
  s = deref(s);
  if (s.examples && s.examples.length) return s.examples[0];
  if (s.example !== undefined) return s.example;
  if (s.default !== undefined) return s.default;
  if (s.enum && s.enum.length) return s.enum[0];
  if ((depth || 0) > 8) return null;
  const type = Array.isArray(s.type) ? s.type[0] : s.type;
  switch (type) {
    case "object": {
      const o = {}, req = s.required || [];
      for (const [k, p] of Object.entries(s.properties || {})) {
        const q = deref(p);
        if (req.includes(k) || q.examples || q.default !== undefined) {
          o[k] = example(p, (depth || 0) + 1);
        }
      }
      return o;
    }
    case "array": return s.minItems ? [example(s.items, (depth || 0) + 1)] : [];
    case "integer": case "number": return s.minimum !== undefined ? s.minimum : 0;
    case "boolean": return false;
    case "string": return "string";
    default: return null;
  }
}

function schemaBlock(s) {
  return el("pre", { class: "schema" }, JSON.stringify(s, null, 2));
}

function paramRow(p) {
  const s = deref(p.schema);
  const type = s.type === "array" ? `array of ${deref(s.items).type}` : (s.type || "any");
  const ex = example(s);
  return el("tr", {},
    el("td", {}, el("code", {}, p.name), p.required ? el("span", { class: "req" }, " *") : null),
    el("td", {}, p.in),
    el("td", {}, type),
    el("td", {}, p.description || s.description || ""),
    el("td", {}, el("input", {
      name: p.name, "data-in": p.in, "aria-label": `${p.in} ${p.name}`,
      placeholder: ex == null ? "" : String(Array.isArray(ex) ? ex.join(",") : ex),
    })));
}

// Sends the form's request; shows the answer in out.
async function send(path, method, op, form, out) {
  out.replaceChildren(el("p", {}, "sending..."));
  let url = path;
  const query = new URLSearchParams();
  const headers = {};
  for (const input of form.querySelectorAll("input[data-in]")) {
    const v = input.value, where = input.dataset.in, name = input.name;
    if (where === "path") url = url.replace(`{${name}}`, encodeURIComponent(v));
    else if (v === "") continue;
    else if (where === "query") {
      const p = (op.parameters || []).find((x) => x.name === name && x.in === "query");
      const list = p && deref(p.schema).type === "array" ? v.split(",") : [v];
      for (const one of list) query.append(name, one);
    } else if (where === "header") headers[name] = v;
  }
  if ([...query].length) url += "?" + query;
  const init = { method: method.toUpperCase(), headers };
  const body = form.querySelector("textarea");
  if (body && body.value.trim() !== "") {
    if (body.dataset.type === "application/json") {
      headers["content-type"] = "application/json";
      init.body = body.value;
    } else {
      let fields;
      try { fields = JSON.parse(body.value); } catch (e) {
        out.replaceChildren(el("p", { class: "error" }, "the form's fields: " + e.message));
        return;
      }
      init.body = new URLSearchParams(Object.entries(fields).map(([k, v]) => [k, String(v)]));
    }
  }
  try {
    const res = await fetch(url, init);
    const text = await res.text();
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ }
    out.replaceChildren(
      el("p", {}, "Status ", el("b", { class: "res-status" }, String(res.status)), " ",
         res.statusText, " - ", init.method, " ", url),
      el("pre", { class: "res-headers" },
         [...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n")),
      el("pre", { class: "res-body" }, shown));
  } catch (e) {
    out.replaceChildren(el("p", { class: "error" }, "request failed: " + e.message));
  }
}

function operation(path, method, op) {
  const params = op.parameters || [];
  const content = op.requestBody && op.requestBody.content || {};
  const ctype = Object.keys(content)[0];
  const out = el("div", { class: "result" });
  const form = el("form", { class: "try" });
  if (params.length) {
    form.append(el("table", { class: "params" },
      el("tr", {}, ["name", "in", "type", "description", "value"].map((h) => el("th", {}, h))),
      params.map(paramRow)));
  }
  if (ctype) {
    const s = content[ctype].schema;
    form.append(
      el("h4", {}, "Body ", el("code", {}, ctype),
         op.requestBody.required ? el("span", { class: "req" }, " *") : null,
         ctype === "application/json" ? null : " (fields as a JSON object)"),
      schemaBlock(s),
      el("textarea", { rows: 6, "data-type": ctype, "aria-label": "body" },
         JSON.stringify(example(s), null, 2)));
  }
  form.append(el("button", { type: "submit", class: "send" }, "Send"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    send(path, method, op, form, out);
  });
  const responses = Object.entries(op.responses || {}).map(([code, r]) => {
    const c = r.content && r.content["application/json"];
    return el("li", {}, el("b", {}, code), " ", r.description || "",
              c && c.schema && Object.keys(c.schema).length ? schemaBlock(c.schema) : null);
  });
  // an operation under two tags is shown twice: the first one has the id
  const first = !seen.has(op.operationId);
  seen.add(op.operationId);
  return el("details", { class: "op " + method + (op.deprecated ? " deprecated" : ""),
                         id: first ? op.operationId : null, "data-op": op.operationId },
    el("summary", {}, el("span", { class: "method" }, method.toUpperCase()), " ",
       el("code", { class: "path" }, path), " ", el("span", { class: "sum" }, op.summary || ""),
       op.deprecated ? el("span", { class: "dep" }, " deprecated") : null),
    op.description ? el("p", {}, op.description) : null,
    form, el("h4", {}, "Responses"), el("ul", {}, responses), out);
}

function render(d) {
  doc = d;
  document.title = `${d.info.title} ${d.info.version} - docs`;
  document.getElementById("title").textContent = d.info.title;
  document.getElementById("info").textContent =
    `version ${d.info.version}` + (d.info.description ? ` - ${d.info.description}` : "");
  const groups = new Map();
  for (const path of Object.keys(d.paths).sort()) {
    for (const method of METHODS) {
      const op = d.paths[path][method];
      if (!op) continue;
      for (const tag of (op.tags && op.tags.length ? op.tags : ["default"])) {
        if (!groups.has(tag)) groups.set(tag, []);
        groups.get(tag).push([path, method, op]);
      }
    }
  }
  const tags = [...groups.keys()].sort((a, b) =>
    (a === "default") - (b === "default") || a.localeCompare(b));
  document.getElementById("ops").replaceChildren(...tags.map((tag) =>
    el("section", { class: "tag", "data-tag": tag }, el("h2", {}, tag),
       groups.get(tag).map(([p, m, op]) => operation(p, m, op)))));
}

fetch(SPEC).then((r) => {
  if (!r.ok) throw new Error(`${SPEC}: ${r.status}`);
  return r.json();
}).then(render).catch((e) => {
  document.getElementById("ops").replaceChildren(
    el("p", { class: "error" }, "could not load the OpenAPI document: " + e.message));
});
})();
]==]

-- js(openapi_path) -> the page's script, reading the document from openapi_path
function _M.js(spec)
  return '"use strict";\nconst SPEC = ' .. gsub(core.json_encode(spec), "\\/", "/") .. ";\n" .. JS
end

_M.css = [[
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 60rem;
       padding: 1rem; color: #222; }
h1 { margin-bottom: 0; } #info { color: #555; margin-top: .2rem; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; text-transform: capitalize; }
details.op { border: 1px solid #ccd; border-radius: 4px; margin: .4rem 0; padding: .3rem .6rem; }
details.op[open] { background: #fafafe; }
summary { cursor: pointer; }
.method { display: inline-block; min-width: 4.5rem; font-weight: bold; color: #fff;
          background: #557; border-radius: 3px; text-align: center; font-size: 13px; }
.get .method { background: #2a6fb0; } .post .method { background: #2e8b57; }
.put .method { background: #b8860b; } .patch .method { background: #8a5fb0; }
.delete .method { background: #b22222; }
.deprecated .path { text-decoration: line-through; } .dep { color: #b22222; }
.sum { color: #444; }
table.params { border-collapse: collapse; width: 100%; margin: .4rem 0; }
.params th, .params td { border-bottom: 1px solid #e4e4ee; padding: .2rem .4rem;
                         text-align: left; vertical-align: top; }
.req { color: #b22222; }
pre { background: #f1f1f6; padding: .4rem; overflow: auto; font-size: 13px; margin: .3rem 0; }
textarea { width: 100%; box-sizing: border-box; font: 13px monospace; }
input { width: 100%; box-sizing: border-box; }
button.send { margin: .4rem 0; padding: .3rem 1.2rem; }
.error { color: #b22222; }
]]

return _M
