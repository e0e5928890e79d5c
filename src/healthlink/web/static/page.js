// Behaviour of the staff and portal pages, as delegated listeners in a file of this site, so the
// pages need no inline event handlers and no eval (the Content-Security-Policy allows neither;
// docs/security.md "Security headers and cookies").
//
//   data-swap-errors           htmx requests from inside it swap their 400/403/409 answers in
//                              (the answer is the form with its error) instead of ignoring them
//   data-nav-param="name"      a <select> that reloads the page with ?name=<value>
//   data-autosubmit            a <select> that submits its form when changed
//   data-remove-line="id"      removes the prescription lines with data-line="id", then re-checks
//   data-remove-closest="sel"  removes its closest ancestor matching sel, then re-checks
(function () {
  "use strict";
  document.addEventListener("htmx:beforeSwap", function (e) {
    var t = e.target;
    if (t && t.closest && t.closest("[data-swap-errors]") && [400, 403, 409].indexOf(e.detail.xhr.status) >= 0) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });
  document.addEventListener("change", function (e) {
    var el = e.target;
    if (!(el instanceof HTMLSelectElement)) return;
    var param = el.getAttribute("data-nav-param");
    if (param) {
      location.search = "?" + encodeURIComponent(param) + "=" + encodeURIComponent(el.value);
    } else if (el.hasAttribute("data-autosubmit") && el.form) {
      el.form.submit();
    }
  });
  function recheck() {
    if (window.htmx) window.htmx.trigger(document.body, "medsafety-recheck");
  }
  document.addEventListener("click", function (e) {
    var btn = e.target instanceof Element ? e.target.closest("[data-remove-line], [data-remove-closest]") : null;
    if (!btn) return;
    var line = btn.getAttribute("data-remove-line");
    if (line !== null) {
      document.querySelectorAll("fieldset.rx-line").forEach(function (f) {
        if (f.getAttribute("data-line") === line) f.remove();
      });
    } else {
      var target = btn.closest(btn.getAttribute("data-remove-closest"));
      if (target) target.remove();
    }
    recheck();
  });
})();
