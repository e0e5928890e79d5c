// The bedside scan page (web/templates/bedside_scan.html): keyboard-wedge scanners type into the
// focused field and send Enter, which submits the form without any script.  This file adds two
// things: the field keeps the focus (a scanner types wherever the focus is), and, where the
// browser has the BarcodeDetector API (Shape Detection API), a camera button that reads QR,
// DataMatrix and Code 128 labels with the phone.  Nothing is fetched from elsewhere.
(function () {
  "use strict";
  var form = document.getElementById("scan-form");
  if (!form) return;
  var field = form.elements.scan;
  field.focus();
  document.addEventListener("click", function (e) {
    if (!e.target.closest("button, a, summary, input, video")) field.focus();
  });
  if (!("BarcodeDetector" in window) || !navigator.mediaDevices) return;
  var box = document.getElementById("camera"), btn = document.getElementById("scan-camera"),
      video = document.getElementById("scan-video");
  box.hidden = false;
  btn.addEventListener("click", async function () {
    var wanted = ["qr_code", "data_matrix", "code_128"], formats = wanted;
    try {
      var have = await BarcodeDetector.getSupportedFormats();
      formats = wanted.filter(function (f) { return have.indexOf(f) >= 0; });
    } catch (e) { /* older implementations: ask for all three */ }
    if (!formats.length) { box.hidden = true; return; }
    var detector = new BarcodeDetector({formats: formats}), stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({video: {facingMode: "environment"}});
    } catch (e) { box.hidden = true; return; }
    video.srcObject = stream; video.hidden = false; await video.play();
    (async function look() {
      var found = await detector.detect(video).catch(function () { return []; });
      if (found.length) {
        stream.getTracks().forEach(function (t) { t.stop(); });
        field.value = found[0].rawValue;
        form.submit();
      } else { requestAnimationFrame(look); }
    })();
  });
})();
