// The explorer's only script: refresh the live part of the page in place, and say so when the
// node's API cannot be reached. Pages mark the refreshable part with data-live="URL".
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  var banner = document.getElementById("unreachable");
  var why = document.getElementById("unreachable-why");
  var period = (parseFloat(document.body.dataset.refresh) || 2) * 1000;
  window.polchainExplorer = { loadedAt: Date.now(), refreshes: 0, failures: 0 };

  function unreachable(reason) {
    window.polchainExplorer.failures += 1;
    why.textContent = reason;
    banner.hidden = false;
  }

  function refresh() {
    var ctrl = new AbortController();
    var timer = setTimeout(function () { ctrl.abort(); }, 5000);
    fetch(live.dataset.live, { cache: "no-store", signal: ctrl.signal })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        banner.hidden = true;
        if (html !== live.innerHTML) { live.innerHTML = html; }
        window.polchainExplorer.refreshes += 1;
      })
      .catch(function (e) { unreachable(e.name === "AbortError" ? "no answer in 5 s" : (e.message || "network error")); })
      .finally(function () { clearTimeout(timer); setTimeout(refresh, period); });
  }

  if (live) { setTimeout(refresh, period); }
})();
