// The chat page: WebSocket /ws to send and receive; a browser without WebSocket follows
// along on the Server-Sent Events stream /events (read-only).
(function () {
  var log = document.getElementById("log");
  var status = document.getElementById("status");
  var form = document.getElementById("form");
  var input = document.getElementById("msg");

  function show(text) {
    var li = document.createElement("li");
    li.textContent = text;
    log.appendChild(li);
  }

  if (!window.WebSocket) {
    var es = new EventSource("/events");
    es.onmessage = function (e) { show(JSON.parse(e.data).text); };
    status.textContent = "read-only (Server-Sent Events)";
    form.style.display = "none";
    return;
  }

  var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") +
                         location.host + "/ws");
  ws.onopen = function () { status.textContent = "connected"; };
  ws.onclose = function () { status.textContent = "disconnected"; };
  ws.onmessage = function (e) { show(e.data); };
  form.onsubmit = function (e) {
    e.preventDefault();
    if (input.value && ws.readyState === WebSocket.OPEN) ws.send(input.value);
    input.value = "";
  };
})();
