/* HealthLink: the signature pad of the registration desk (grant_in_person.html).  Plain script,
   pointer events (mouse, pen and touch alike); the drawing goes into the hidden "signature"
   field as a PNG data: URL when the form is sent.  Nothing is loaded from elsewhere. */
(function () {
  "use strict";
  var pad = document.getElementById("signature-pad");
  var field = document.getElementById("signature");
  var form = pad && pad.closest("form");
  if (!pad || !field || !form) { return; }
  var ctx = pad.getContext("2d");
  var drawing = false, drawn = false, last = null;
  ctx.lineWidth = 2.5; ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.strokeStyle = "#000";

  function at(ev) {
    var r = pad.getBoundingClientRect();
    return { x: (ev.clientX - r.left) * pad.width / r.width, y: (ev.clientY - r.top) * pad.height / r.height };
  }
  pad.addEventListener("pointerdown", function (ev) {
    ev.preventDefault();
    drawing = true; last = at(ev);
    pad.setPointerCapture(ev.pointerId);
    ctx.beginPath(); ctx.arc(last.x, last.y, ctx.lineWidth / 2, 0, 2 * Math.PI); ctx.fill();
    drawn = true;
  });
  pad.addEventListener("pointermove", function (ev) {
    if (!drawing) { return; }
    var p = at(ev);
    ctx.beginPath(); ctx.moveTo(last.x, last.y); ctx.lineTo(p.x, p.y); ctx.stroke();
    last = p; drawn = true;
  });
  function stop(ev) {
    if (!drawing) { return; }
    drawing = false;
    if (pad.hasPointerCapture(ev.pointerId)) { pad.releasePointerCapture(ev.pointerId); }
    field.value = pad.toDataURL("image/png");
  }
  pad.addEventListener("pointerup", stop);
  pad.addEventListener("pointercancel", stop);
  document.getElementById("signature-clear").addEventListener("click", function () {
    ctx.clearRect(0, 0, pad.width, pad.height); drawn = false; field.value = "";
  });
  form.addEventListener("submit", function (ev) {
    if (!drawn) {
      ev.preventDefault();
      document.getElementById("signature-missing").hidden = false;
      return;
    }
    field.value = pad.toDataURL("image/png");
  });
})();
