// bench/apps/peers/node_app.js: the Node peer of the peers sections of bench/run.sh, on
// Node's own `http` module (no framework):
//   PORT=8000 node bench/apps/peers/node_app.js
// The routes of the moonlet apps those sections run:
//   /hello          {"message":"hello"}
//   /sleep?s=1      a timer (the event loop serves others meanwhile)
//   /a              the seed's mistake: a blocking 1 s wait on the event loop (Atomics.wait)
//   /c              a 1 s timer
//   /account/{id}   pgbench's select-only statement through a `pg` Pool of BENCH_PG_POOL
//                   connections (16 by default) when BENCH_PG_URL is set; 404 when no row
// There is no /b nor /d: Node runs no JavaScript function on a thread pool of its own
// (worker_threads would be a pool written by hand).
'use strict';
const http = require('http');

const port = Number(process.env.PORT || 8000);
const pgUrl = process.env.BENCH_PG_URL;
const pool = pgUrl
  ? new (require('pg').Pool)({ connectionString: pgUrl, max: Number(process.env.BENCH_PG_POOL || 16) })
  : null;
const blocker = new Int32Array(new SharedArrayBuffer(4));

function json(res, status, body) {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(s) });
  res.end(s);
}

const server = http.createServer((req, res) => {
  const q = req.url.indexOf('?');
  const path = q < 0 ? req.url : req.url.slice(0, q);
  if (path === '/hello') return json(res, 200, { message: 'hello' });
  if (path === '/sleep') {
    const s = Number(new URLSearchParams(req.url.slice(q + 1)).get('s') || 1);
    return setTimeout(() => json(res, 200, { slept: s }), s * 1000);
  }
  if (path === '/a') {
    Atomics.wait(blocker, 0, 0, 1000);
    return json(res, 200, { route: 'a' });
  }
  if (path === '/c') return setTimeout(() => json(res, 200, { route: 'c' }), 1000);
  if (pool && path.startsWith('/account/')) {
    const aid = Number(path.slice(9));
    return pool.query('SELECT abalance FROM pgbench_accounts WHERE aid = $1', [aid]).then(
      (r) => (r.rows.length ? json(res, 200, { abalance: r.rows[0].abalance })
        : json(res, 404, { detail: 'Account not found' })),
      (err) => json(res, 500, { detail: String(err) }));
  }
  return json(res, 404, { detail: 'Not Found' });
});
server.listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${port}`));
