// The dashboard's live part: the sweep page's progress and its training
// loss curves (one line per cell, uPlot), from the server-sent events of
// /sweeps/<sweep>/events. Everything else works without this script.
(function () {
  "use strict";
  var box = document.getElementById("curves");
  if (!box || !window.EventSource) { return; }
  var sweep = box.getAttribute("data-sweep");
  var plot = null;
  var palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

  function draw(curves) {
    // uPlot wants one x array and y arrays aligned to it (null: no point).
    var steps = {};
    curves.cells.forEach(function (c) { c.steps.forEach(function (s) { steps[s] = true; }); });
    var xs = Object.keys(steps).map(Number).sort(function (a, b) { return a - b; });
    var index = {};
    xs.forEach(function (s, i) { index[s] = i; });
    var data = [xs];
    var points = 0;
    curves.cells.forEach(function (c) {
      var ys = xs.map(function () { return null; });
      c.steps.forEach(function (s, i) { ys[index[s]] = c.means[i]; });
      points += c.steps.length;
      data.push(ys);
    });
    box.setAttribute("data-points", String(points));
    var series = [{ label: "step" }].concat(curves.cells.map(function (c, i) {
      return { label: c.label, stroke: palette[i % palette.length], width: 2, spanGaps: true };
    }));
    var width = Math.max(320, Math.min(1100, box.clientWidth || 900));
    if (plot && plot.series.length === series.length) {
      plot.setData(data);
      return;
    }
    if (plot) { plot.destroy(); }
    plot = new uPlot({
      width: width, height: 320, series: series, scales: { x: { time: false } },
      axes: [{ label: "step" }, { label: curves.metric }]
    }, data, box);
  }

  function status(s) {
    var p = document.querySelector("#progress progress");
    var total = s.queued + s.running + s.succeeded + s.diverged + s.failed + s.cancelled;
    var done = total - s.queued - s.running;
    if (p) { p.max = Math.max(total, 1); p.value = done; }
    var counts = document.querySelector("#progress .counts");
    if (counts) {
      counts.textContent = done + "/" + total + " done: " + s.succeeded + " succeeded, " + s.diverged + " diverged, " +
        s.failed + " failed, " + s.cancelled + " cancelled; " + s.running + " running, " + s.queued + " queued";
    }
  }

  var events = new EventSource("/sweeps/" + encodeURIComponent(sweep) + "/events");
  events.addEventListener("status", function (e) { status(JSON.parse(e.data)); });
  events.addEventListener("curves", function (e) { draw(JSON.parse(e.data)); });
  events.addEventListener("finished", function () {
    events.close();
    document.body.setAttribute("data-finished", "1");
  });
})();
