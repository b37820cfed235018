// drawmatch workbench: filters that apply on change, review keys, error messages.
(function () {
  "use strict";

  function onReady(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  onReady(function () {
    document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
      select.addEventListener("change", function () {
        var page = select.form.querySelector("input[name=page]");
        if (page) page.remove();
        select.form.requestSubmit();
      });
    });
  });

  // Review queue: M = match, N = not a match, S = skip (not while typing a note).
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    var target = event.target;
    if (target && target.closest && target.closest("input, textarea, select")) return;
    var card = document.getElementById("review-card");
    if (!card) return;
    var button = card.querySelector('button[data-key="' + event.key.toLowerCase() + '"]');
    if (!button) return;
    event.preventDefault();
    // a card swapped in a moment ago may not be wired to htmx yet: a plain form post would
    // then leave the page (and its notice); processing twice is harmless
    if (window.htmx) window.htmx.process(card);
    button.click();
  });

  function flash(text) {
    var box = document.getElementById("flash");
    if (!box) return;
    box.textContent = text;
    box.hidden = false;
    window.clearTimeout(flash.timer);
    flash.timer = window.setTimeout(function () { box.hidden = true; }, 6000);
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var text = "The server refused this (" + xhr.status + ")";
    try { text += ": " + JSON.parse(xhr.responseText).detail; } catch (e) { /* not JSON */ }
    flash(text);
  });
  document.addEventListener("htmx:sendError", function () {
    flash("The server cannot be reached: nothing was recorded.");
  });
})();
