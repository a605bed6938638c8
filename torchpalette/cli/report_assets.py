"""The report page's inline style sheet and script (static text; nothing is fetched).

The layout is CSS grid and flexbox, so it reflows from a phone to a wide screen: swatches are
cards in an ``auto-fill`` grid whose text wraps inside its card, figures are ``width: 100%``
with a ``viewBox``, reduced images sit in a grid that drops to one column on narrow windows.
The log-scale toggle of the histogram is pure CSS (a checkbox), so it works without script.

The script adds what needs it: a swatch's hex code copied on click (``navigator.clipboard``,
falling back to a hidden text area and ``execCommand("copy")`` where the clipboard API is not
allowed), its RGB, Lab and weight shown in the status bar on hover or focus, and the
original/reduced comparison slider. With the URL fragment ``#selftest`` it also checks the
layout after load and writes its findings as JSON into ``<pre id="selftest">``: swatch labels
that overlap another label or overflow their card, swatch cards that overlap, figures wider
than their box, SVG text cut off by its drawing's edge, and whether the page scrolls sideways;
then it hovers and clicks the first swatch and moves the first slider, and records what the
status bar and the slider show. Tests read that back from a headless browser's ``--dump-dom``;
inside a frame (to test widths below a browser's minimum window width) the findings are also
posted to the parent page.
"""

from __future__ import annotations

__all__ = ["CSS", "SCRIPT"]

CSS = """*{box-sizing:border-box}
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;padding:1em 1em 4em;max-width:1200px;
color:#222;background:#fff}
h1{font-size:1.5em;overflow-wrap:anywhere}
h2{margin-top:1.8em;border-bottom:1px solid #ddd;font-size:1.2em}
h3{font-size:1em;margin:1.2em 0 .4em}
p,li{overflow-wrap:anywhere}
section,figure{min-width:0}
figure{margin:0}
figure svg{display:block;width:100%;height:auto}
.notes li{background:#eef4ff;border-left:4px solid #7aa2e8;padding:.3em .7em;margin:.3em 0;
list-style:none}
.notes{padding:0}
.empty{color:#555;font-style:italic}
.original img{display:block;max-width:100%;height:auto}
.pixelated img,.pixelated .before{image-rendering:pixelated}
.legend{display:flex;flex-wrap:wrap;gap:.2em 1.2em;list-style:none;padding:0;margin:.4em 0}
.legend li{white-space:nowrap}
.hist .scale-log{display:none}
#logscale:checked~.hist .scale-log{display:inline}
#logscale:checked~.hist .scale-linear{display:none}
@media (max-width:600px){.hist svg{font-size:28px}}
.swatches{display:grid;grid-template-columns:repeat(auto-fill,minmax(6.4em,1fr));gap:.6em;
margin:.6em 0}
.swatch{display:flex;flex-direction:column;min-width:0;margin:0;padding:0 0 .2em;
border:1px solid #bbb;border-radius:6px;background:#fff;color:#222;font:inherit;
text-align:center;cursor:copy}
.swatch:hover,.swatch:focus-visible{outline:2px solid #222;outline-offset:1px}
.swatch .chip{display:block;height:3em;border-radius:5px 5px 0 0;background:var(--c)}
.swatch .label{display:block;padding:0 .2em;font:12px/1.35 ui-monospace,Menlo,Consolas,
monospace;white-space:normal;overflow-wrap:anywhere}
.swatch .label.jnd,tr.jnd{background:#fff3c4}
.chips{display:flex;flex-wrap:wrap;gap:3px;margin:.4em 0}
.chips .swatch{width:1.5em;height:1.5em;padding:0;border-radius:3px;border-color:#888;
background:var(--c)}
table.de{border-collapse:collapse;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;
max-width:100%}
table.de td,table.de th{padding:2px 6px;text-align:left}
table.de i{display:inline-block;width:1em;height:1em;margin-right:4px;vertical-align:middle;
border:1px solid #999}
.reduced{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,320px),1fr));
gap:1em}
.compare{position:relative;line-height:0;background:#fff;border:1px solid #ccc}
.compare img{display:block;width:100%;height:auto}
.compare .before{position:absolute;inset:0;background-size:100% 100%;
clip-path:inset(0 calc(100% - var(--pos,50%)) 0 0)}
.compare .split{position:absolute;top:0;bottom:0;left:var(--pos,50%);width:2px;
margin-left:-1px;background:#fff;box-shadow:0 0 2px #000;pointer-events:none}
.compare input{position:absolute;inset:0;width:100%;height:100%;margin:0;opacity:0;
cursor:ew-resize}
figcaption{font-size:.9em;margin-top:.2em}
#info{position:fixed;left:0;right:0;bottom:0;margin:0;padding:.45em 1em;min-height:2.2em;
background:#222;color:#fff;font:13px/1.3 ui-monospace,Menlo,Consolas,monospace;
overflow-wrap:anywhere}"""

SCRIPT = r"""(function () {
  "use strict";
  var info = document.getElementById("info");
  function say(text) { if (info) { info.textContent = text; } }
  function swatchOf(e) { return e.target.closest ? e.target.closest(".swatch") : null; }
  function describe(e) { var s = swatchOf(e); if (s) { say(s.dataset.info); } }
  document.addEventListener("mouseover", describe);
  document.addEventListener("focusin", describe);

  function fallbackCopy(text) {
    var t = document.createElement("textarea");
    t.value = text;
    t.setAttribute("readonly", "");
    t.style.position = "fixed";
    t.style.top = "0";
    t.style.opacity = "0";
    document.body.appendChild(t);
    t.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (err) { ok = false; }
    document.body.removeChild(t);
    return ok;
  }
  function copy(text) {
    function done(ok) { say(ok ? "copied " + text : "select and copy: " + text); }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); },
                                               function () { done(fallbackCopy(text)); });
    } else {
      done(fallbackCopy(text));
    }
  }
  document.addEventListener("click", function (e) {
    var s = swatchOf(e);
    if (s) { copy(s.dataset.hex); }
  });

  document.querySelectorAll(".compare input").forEach(function (r) {
    r.addEventListener("input", function () {
      r.parentNode.style.setProperty("--pos", r.value + "%");
    });
  });

  function overlap(a, b) {
    return Math.min(a.right, b.right) - Math.max(a.left, b.left) > 0.5 &&
           Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 0.5;
  }
  function inside(r, box) {
    return r.left >= box.left - 0.5 && r.right <= box.right + 0.5 &&
           r.top >= box.top - 0.5 && r.bottom <= box.bottom + 0.5;
  }
  function name(el) {
    return el.tagName.toLowerCase() + (el.className && el.className.baseVal === undefined ?
      "." + el.className : "") + " in #" + el.closest("section").id;
  }
  function pairs(els, rects, found) {
    for (var i = 0; i < els.length; i++) {
      for (var j = i + 1; j < els.length; j++) {
        if (overlap(rects[i], rects[j])) {
          found.push(els[i].textContent + " | " + els[j].textContent);
        }
      }
    }
  }
  function selftest() {
    var root = document.documentElement;
    var out = {width: window.innerWidth, page_overflow: root.scrollWidth > window.innerWidth + 1,
               labels: 0, swatches: 0, figures: 0, overlaps: [], label_overflows: [],
               swatch_overlaps: [], figure_overflows: [], clipped_text: [], histogram_fill: 0};
    var labels = Array.prototype.slice.call(document.querySelectorAll(".swatch .label"));
    // the box of the text itself (a Range), not of its block: text that spills out of a
    // narrow card still counts where it is drawn
    var rects = labels.map(function (l) {
      var range = document.createRange();
      range.selectNodeContents(l);
      return range.getBoundingClientRect();
    });
    out.labels = labels.length;
    labels.forEach(function (l, i) {
      var box = l.closest(".swatch").getBoundingClientRect();
      if (!inside(rects[i], box) || l.scrollWidth > l.clientWidth + 1) {
        out.label_overflows.push(l.textContent);
      }
    });
    pairs(labels, rects, out.overlaps);
    var cards = Array.prototype.slice.call(document.querySelectorAll(".swatch"));
    out.swatches = cards.length;
    pairs(cards, cards.map(function (c) { return c.getBoundingClientRect(); }),
          out.swatch_overlaps);
    var figs = document.querySelectorAll("section figure, section svg, section img, " +
                                         "section table, .compare, .swatches, .chips");
    out.figures = figs.length;
    figs.forEach(function (f) {
      var r = f.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) { return; }
      var sec = f.closest("section").getBoundingClientRect();
      var par = f.parentElement.getBoundingClientRect();
      if (r.left < sec.left - 0.5 || r.right > sec.right + 0.5 ||
          r.left < par.left - 0.5 || r.right > par.right + 0.5) {
        out.figure_overflows.push(name(f));
      }
    });
    document.querySelectorAll("section svg text").forEach(function (t) {
      var r = t.getBoundingClientRect();
      if (r.width > 0 && !inside(r, t.closest("svg").getBoundingClientRect())) {
        out.clipped_text.push(t.textContent);
      }
    });
    var hist = document.querySelector(".hist svg");
    if (hist) {
      out.histogram_fill = hist.getBoundingClientRect().width /
        hist.closest("section").getBoundingClientRect().width;
    }
    interact(out, function () {
      var pre = document.createElement("pre");
      pre.id = "selftest";
      pre.textContent = JSON.stringify(out);
      document.body.appendChild(pre);
      // in a frame (a test page narrower than a browser window can be) tell the parent too
      if (window.parent !== window) { window.parent.postMessage({selftest: out}, "*"); }
    });
  }
  function interact(out, finish) {
    // after the layout checks: hover and click the first swatch, move the first slider
    var s = document.querySelector(".swatch");
    if (s) {
      s.dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));
      out.hover = info.textContent;
      out.first_hex = s.dataset.hex;
      s.click();
    }
    var r = document.querySelector(".compare input");
    if (r) {
      r.value = "20";
      r.dispatchEvent(new Event("input", {bubbles: true}));
      out.slider = r.parentNode.style.getPropertyValue("--pos");
    }
    setTimeout(function () { out.click = info.textContent; finish(); }, 200);
  }
  if (location.hash === "#selftest") {
    if (document.readyState === "complete") { selftest(); }
    else { window.addEventListener("load", selftest); }
  }
})();"""
