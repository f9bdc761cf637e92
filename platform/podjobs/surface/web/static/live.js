// podjobs dashboard: live refresh without a page reload, and confirmations.
// Every 2 s (while "live" is on and the tab is visible) the page is fetched again and each
// element with a data-live attribute is swapped for its new version; on the overview the
// per-pod throughput and failure graphs are drawn from /ui/overview.json. Forms with
// data-confirm ask before they submit.
(function () {
  "use strict";
  var PERIOD = 2000, KEY = "podjobs.live";
  var live = localStorage.getItem(KEY) !== "off";
  var history = {};  // pod -> [{t, processed, failed}]

  function toggleButton() {
    var b = document.getElementById("live-toggle");
    if (!b) return;
    b.textContent = live ? "live: on" : "live: off";
    b.classList.toggle("off", !live);
    b.onclick = function () { live = !live; localStorage.setItem(KEY, live ? "on" : "off"); toggleButton(); };
  }

  function busy() {  // do not swap what the operator is using
    var a = document.activeElement;
    return a && a.closest && a.closest("[data-live]") && a.tagName !== "BODY";
  }

  function refresh() {
    if (!live || document.hidden || busy()) return;
    var parts = document.querySelectorAll("[data-live]");
    if (parts.length) {
      fetch(location.href, {credentials: "same-origin", headers: {"X-Podjobs-Live": "1"}})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          parts.forEach(function (old) {
            var fresh = doc.querySelector('[data-live="' + old.getAttribute("data-live") + '"]');
            if (fresh && fresh.innerHTML !== old.innerHTML) { old.replaceWith(fresh); wire(fresh); }
          });
          document.body.setAttribute("data-refreshed", String(Date.now()));
        }).catch(function () {});
    }
    if (document.querySelector("svg[data-spark]")) graphs();
  }

  function graphs() {
    fetch("/ui/overview.json", {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (doc) {
        if (!doc) return;
        doc.pods.forEach(function (p) {
          var h = history[p.name] = history[p.name] || [];
          h.push({t: doc.at, processed: p.stats.processed || 0, failed: p.stats.failed || 0});
          if (h.length > 61) h.shift();
          draw(p.name, h);
        });
      }).catch(function () {});
  }

  function rates(h, field) {
    var out = [];
    for (var i = 1; i < h.length; i++) {
      var dt = Math.max(0.001, h[i].t - h[i - 1].t);
      out.push(Math.max(0, (h[i][field] - h[i - 1][field]) / dt));
    }
    return out;
  }

  function draw(name, h) {
    var svg = document.querySelector('svg[data-spark="' + name + '"]');
    if (!svg || h.length < 2) return;
    var ok = rates(h, "processed"), bad = rates(h, "failed");
    var top = Math.max.apply(null, ok.concat(bad).concat([1]));
    function line(vals, colour) {
      var pts = vals.map(function (v, i) { return (i * 300 / 59).toFixed(1) + "," + (58 - v * 56 / top).toFixed(1); });
      return '<polyline stroke="' + colour + '" points="' + pts.join(" ") + '"/>';
    }
    svg.innerHTML = line(ok, "#1f8a4c") + line(bad, "#c0392b") +
      '<text x="296" y="10" text-anchor="end" font-size="9" fill="#6b7385">' + top.toFixed(1) + "/s</text>";
    svg.setAttribute("data-points", String(h.length));
  }

  function wire(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    toggleButton();
    wire(document);
    if (document.querySelector("svg[data-spark]")) graphs();
    setInterval(refresh, PERIOD);
  });
})();
