/* Time-series charts drawn by uPlot (served by the gateway from npm). Each chart keeps its own points, the
 * last MAX_POINTS polls, so the test (and a chart that is rebuilt for a new series) can read them; without
 * uPlot the points are still kept and nothing is drawn (the page then carries an install notice). */
(function () {
  "use strict";

  const MAX_POINTS = 300; // 10 minutes at one poll every 2 s
  const HEIGHT = 200;
  const MIN_SPAN_SECONDS = 60;
  const PALETTE = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
                   "#4b5563", "#65a30d"];

  const INTEGER_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];

  /* A chart in `container`. series: [{label, color?, dash?, stepped?, fill?}]; yRange: "positive" (from 0) or
   * "signed" (around 0); unit: appended to the values; integer: counts (whole ticks, no decimals); decimals:
   * the legend's precision otherwise. */
  class TimeChart {
    constructor(container, { series, yRange = "positive", unit = "", integer = false, decimals = 1 }) {
      this.container = container;
      this.series = series;
      this.yRange = yRange;
      this.unit = unit;
      this.integer = integer;
      this.decimals = integer ? 0 : decimals;
      this.data = [[], ...series.map(() => [])];
      this.plot = null;
      this.build();
      if (window.ResizeObserver) {
        new ResizeObserver(() => this.resize()).observe(container);
      }
    }

    /* Appends one point: x is the server's time in seconds, values one per series (null leaves a gap). */
    push(time, values) {
      this.data[0].push(time);
      values.forEach((value, i) => this.data[i + 1].push(value == null || !isFinite(value) ? null : value));
      if (this.data[0].length > MAX_POINTS) this.data.forEach((column) => column.shift());
      if (this.plot) this.plot.setData(this.data);
    }

    /* Adds series (by label) that appeared since the chart was built; earlier points of theirs are gaps. */
    ensureSeries(labels) {
      const known = new Set(this.series.map((s) => s.label));
      const added = labels.filter((label) => !known.has(label));
      if (!added.length) return;
      for (const label of added) {
        this.series.push({ label });
        this.data.push(this.data[0].map(() => null));
      }
      this.build();
    }

    /* A copy of the points, [[times], [values of series 1], ...], and the series' labels. */
    snapshot() {
      return { labels: this.series.map((s) => s.label), data: this.data.map((column) => column.slice()) };
    }

    build() {
      if (this.plot) this.plot.destroy();
      this.plot = null;
      if (typeof window.uPlot !== "function") return;
      this.plot = new window.uPlot(this.options(), this.data, this.container);
    }

    resize() {
      if (this.plot) this.plot.setSize({ width: this.width(), height: HEIGHT });
    }

    width() {
      return Math.max(240, this.container.clientWidth);
    }

    options() {
      const format = (value) => (value == null ? "–" : value.toFixed(this.decimals) + this.unit);
      const signed = this.yRange === "signed";
      return {
        width: this.width(),
        height: HEIGHT,
        cursor: { drag: { x: false, y: false } },
        legend: { live: false }, // labels only: the tiles above carry the current numbers
        scales: {
          // At least a minute wide, so that the first few polls do not spread into sub-second ticks.
          x: { time: true, range: (u, min, max) => [Math.min(min ?? 0, (max ?? 0) - MIN_SPAN_SECONDS), max] },
          y: { range: (u, min, max) => range(min, max, signed) },
        },
        axes: [
          { stroke: "#475467", grid: { stroke: "#eaecf0" }, ticks: { stroke: "#eaecf0" } },
          { stroke: "#475467", grid: { stroke: "#eaecf0" }, ticks: { stroke: "#eaecf0" }, size: 56,
            values: (u, ticks) => ticks.map((tick) => +tick.toFixed(3) + this.unit),
            ...(this.integer ? { incrs: INTEGER_STEPS } : {}) },
        ],
        series: [{ label: "Time" }, ...this.series.map((s, i) => this.seriesOptions(s, i, format))],
      };
    }

    seriesOptions(spec, index, format) {
      const color = spec.color || PALETTE[index % PALETTE.length];
      const options = { label: spec.label, stroke: color, width: 2, points: { show: false },
                        value: (u, v) => format(v) };
      if (spec.dash) options.dash = spec.dash;
      if (spec.fill) options.fill = spec.fill;
      if (spec.stepped && window.uPlot.paths && window.uPlot.paths.stepped) {
        options.paths = window.uPlot.paths.stepped({ align: 1 });
      }
      return options;
    }
  }

  // The y axis starts at 0 (or spans 0 for signed values) and never collapses to a point when values are flat.
  function range(min, max, signed) {
    const low = min == null ? 0 : Math.min(0, min);
    const high = max == null ? 1 : Math.max(signed ? 0 : 1, max);
    const pad = (high - low || 1) * 0.1;
    return [signed && low < 0 ? low - pad : low, high + pad];
  }

  window.IqraAdminCharts = Object.freeze({ TimeChart, PALETTE });
})();
