/* The numbers the dashboard draws, computed from the admin API's cumulative totals: rates from the deltas of
 * counters between two polls, and quantiles from the deltas of histogram buckets over a sliding window,
 * interpolated as Prometheus' histogram_quantile does, so the dashboard and a Grafana panel on /metrics agree.
 * No DOM here: window.IqraAdminStats is plain functions, which the browser test also calls directly. */
(function () {
  "use strict";

  /* The q-quantile (0..1) of a histogram, or null without observations.
   * buckets: [{le, count}] with cumulative counts and finite, increasing bounds; total: every observation,
   * those above the last bound included (the +Inf bucket). Like histogram_quantile: the rank falls in a bucket
   * and is placed linearly inside it; the first bucket starts at 0 unless its bound is <= 0 (then the bound is
   * the answer); a rank in the +Inf bucket answers the last finite bound. */
  function histogramQuantile(q, buckets, total) {
    if (!(total > 0) || !buckets.length) return null;
    const rank = q * total;
    let index = buckets.findIndex((bucket) => bucket.count >= rank);
    if (index < 0) return buckets[buckets.length - 1].le;
    if (index === 0 && buckets[0].le <= 0) return buckets[0].le;
    const start = index === 0 ? 0 : buckets[index - 1].le;
    const below = index === 0 ? 0 : buckets[index - 1].count;
    const inBucket = buckets[index].count - below;
    if (inBucket <= 0) return buckets[index].le;
    return start + (buckets[index].le - start) * ((rank - below) / inBucket);
  }

  /* Per-second rates of named cumulative counters between two readings taken dt seconds apart. A counter
   * that went down was reset (a worker restarted): like Prometheus' rate(), its new value is the increase.
   * Returns null when there is nothing to compare with yet. */
  function counterRates(previous, current, dt) {
    if (!previous || !(dt > 0)) return null;
    const rates = {};
    for (const [name, value] of Object.entries(current)) {
      const before = previous[name] || 0;
      const increase = value >= before ? value - before : value;
      rates[name] = increase / dt;
    }
    return rates;
  }

  /* A histogram's readings over the last `seconds`: quantiles of the observations made in that window. */
  class HistogramWindow {
    constructor(seconds) {
      this.seconds = seconds;
      this.readings = [];
    }

    /* Adds the reading at server time `time` ({buckets, count} as the API sends it). */
    push(time, histogram) {
      const reading = { time, bounds: histogram.buckets.map((b) => b.le),
                        counts: histogram.buckets.map((b) => b.count), total: histogram.count };
      const last = this.readings[this.readings.length - 1];
      if (last && !sameShape(last, reading)) this.readings = [];
      this.readings.push(reading);
      // Keep one reading at or before the window's start: it is the baseline the deltas are taken from.
      const start = time - this.seconds;
      while (this.readings.length > 2 && this.readings[1].time <= start) this.readings.shift();
    }

    /* Observations in the window (0 before a second reading). */
    observations() {
      if (this.readings.length < 2) return 0;
      return this.readings[this.readings.length - 1].total - this.readings[0].total;
    }

    quantile(q) {
      if (this.readings.length < 2) return null;
      const first = this.readings[0];
      const last = this.readings[this.readings.length - 1];
      const buckets = last.bounds.map((le, i) => ({ le, count: last.counts[i] - first.counts[i] }));
      return histogramQuantile(q, buckets, last.total - first.total);
    }
  }

  // A reset (a count went down) or other bounds start the window afresh: deltas across them mean nothing.
  function sameShape(a, b) {
    if (a.bounds.length !== b.bounds.length || b.total < a.total) return false;
    return a.bounds.every((le, i) => le === b.bounds[i] && b.counts[i] >= a.counts[i]);
  }

  window.IqraAdminStats = Object.freeze({ histogramQuantile, counterRates, HistogramWindow });
})();
