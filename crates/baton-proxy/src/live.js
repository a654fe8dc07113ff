// Baton: "a new version is available". Served by Baton's proxy at
// /_baton/live.js to apps with `[proxy] live_updates = true`; include it in
// a page with <script src="/_baton/live.js" defer></script>. It listens to
// /_baton/events and, once the release serving this visitor changes, shows
// a banner offering to reload. The banner is the element #baton-new-version
// (style it as you like); the release is in its data-release attribute, and
// the release serving the visitor now in <html data-baton-release>.
(function () {
  if (!window.EventSource || window.__batonLive) return;
  window.__batonLive = true;
  var first = null;
  var events = new EventSource("/_baton/events");
  events.addEventListener("release", function (event) {
    document.documentElement.dataset.batonRelease = event.data;
    if (first === null) {
      first = event.data;
      return;
    }
    if (event.data === first || document.getElementById("baton-new-version")) return;
    var banner = document.createElement("div");
    banner.id = "baton-new-version";
    banner.setAttribute("role", "status");
    banner.dataset.release = event.data;
    banner.dataset.shownAt = String(Date.now());
    banner.style.cssText =
      "position:fixed;left:0;right:0;bottom:0;z-index:2147483647;padding:.75em 1em;" +
      "background:#1f2937;color:#fff;font:15px/1.4 system-ui,sans-serif;text-align:center";
    banner.appendChild(document.createTextNode("A new version is available. "));
    var reload = document.createElement("button");
    reload.type = "button";
    reload.textContent = "Reload";
    reload.style.cssText = "margin-left:.5em;font:inherit;cursor:pointer";
    reload.addEventListener("click", function () {
      location.reload();
    });
    banner.appendChild(reload);
    document.body.appendChild(banner);
  });
})();
