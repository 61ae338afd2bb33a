// Validates an OpenAPI 3.1 document with validators nobody here wrote: the document with
// @seriousme/openapi-schema-validator (the OpenAPI specification's own schemas), then every
// schema object in it with ajv against the JSON Schema 2020-12 meta-schema (the first one
// does not look inside schema objects), and every pattern as a JavaScript regex.
// Usage: node openapi_validate.mjs URL   -> prints {"valid":..., "version":..., "errors":...,
// "schemas": N} as JSON; exits 1 when the document is not valid.
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import path from "node:path";

const require = createRequire(path.resolve(process.env.NODE_PATH || ".", "x.js"));
const load = async (name) => import(pathToFileURL(require.resolve(name)).href);
const { Validator } = await load("@seriousme/openapi-schema-validator");
const Ajv2020 = (await load("ajv/dist/2020.js")).default;

const res = await fetch(process.argv[2]);
const doc = await res.json();
const validator = new Validator();
const out = await validator.validate(doc);
const errors = out.valid ? [] : [out.errors];

const ajv = new Ajv2020({ strict: false });
const schemas = [];
for (const [name, s] of Object.entries(doc.components?.schemas || {})) schemas.push([name, s]);
for (const [p, item] of Object.entries(doc.paths || {})) {
  for (const [m, op] of Object.entries(item)) {
    const at = `${m} ${p}`;
    for (const prm of op.parameters || []) schemas.push([`${at} ${prm.in} ${prm.name}`, prm.schema]);
    for (const [ct, c] of Object.entries(op.requestBody?.content || {}))
      schemas.push([`${at} body ${ct}`, c.schema]);
    for (const [st, r] of Object.entries(op.responses || {}))
      for (const [ct, c] of Object.entries(r.content || {}))
        schemas.push([`${at} ${st} ${ct}`, c.schema]);
  }
}
const patterns = (s, where) => {
  if (!s || typeof s !== "object") return;
  if (typeof s.pattern === "string") {
    try { new RegExp(s.pattern, "u"); } catch (e) { errors.push(`${where}: ${e.message}`); }
  }
  for (const v of Object.values(s)) patterns(v, where);
};
for (const [where, s] of schemas) {
  if (!ajv.validateSchema(s)) errors.push({ where, errors: ajv.errors });
  patterns(s, where);
}
console.log(JSON.stringify({ valid: errors.length === 0, version: validator.version,
                             errors, schemas: schemas.length }));
process.exit(errors.length === 0 ? 0 : 1);
