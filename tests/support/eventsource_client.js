// A real Server-Sent Events client for tests/spec/stream_spec.lua: the npm `eventsource`
// package (installed into build/node by scripts/deps.sh test) reads URL until it has N
// events, following reconnections, then prints them as one JSON array and exits.
// Usage: NODE_PATH=build/node/node_modules node eventsource_client.js URL N [Last-Event-ID]
const EventSource = require("eventsource");
const [url, n, lastId] = process.argv.slice(2);
const headers = lastId ? { "Last-Event-ID": lastId } : {};
const es = new EventSource(url, { headers });
const events = [];
let opens = 0;
function record(type) {
  return (e) => {
    events.push({ type, data: e.data, id: e.lastEventId });
    if (events.length >= Number(n)) {
      es.close();
      console.log(JSON.stringify({ opens, events }));
      process.exit(0);
    }
  };
}
es.onopen = () => { opens++; };
es.onmessage = record("message");
es.addEventListener("update", record("update"));
es.onerror = (e) => {
  if (e && e.status) { console.error("error status " + e.status); process.exit(1); }
};
setTimeout(() => { console.error("timeout: " + JSON.stringify(events)); process.exit(1); }, 10000);
