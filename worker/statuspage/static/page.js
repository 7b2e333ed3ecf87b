// Refreshes the page's live part with a short poll: the server renders it,
// this only swaps it in. Forms are outside the live part, so typing is not
// lost; a tab in the background does not poll.
(function () {
  "use strict";
  var stamp = document.getElementById("refreshed");
  var live = document.getElementById("live");
  if (!stamp || !live) return;
  var every = parseInt(stamp.getAttribute("data-refresh-ms"), 10) || 5000;
  var url = stamp.getAttribute("data-live");
  var busy = false;

  function openDetails() {
    var open = [];
    live.querySelectorAll("details[open] > summary").forEach(function (s) {
      open.push(s.parentElement.parentElement.querySelector("h3") ? s.parentElement.parentElement.querySelector("h3").textContent : "");
    });
    return open;
  }

  function refresh() {
    if (busy || document.visibilityState === "hidden") return;
    busy = true;
    var keep = openDetails();
    fetch(url, { headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (r) {
        if (!r.ok && r.status !== 503) throw new Error(r.status + " " + r.statusText);
        return r.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        live.querySelectorAll("details").forEach(function (d) {
          var h = d.parentElement.querySelector("h3");
          if (h && keep.indexOf(h.textContent) >= 0) d.open = true;
        });
        stamp.textContent = "as of " + new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC";
        stamp.parentElement.classList.remove("stale");
      })
      .catch(function (e) {
        stamp.textContent = "not refreshed: " + e.message + " (retrying)";
        stamp.parentElement.classList.add("stale");
      })
      .finally(function () { busy = false; });
  }

  setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
