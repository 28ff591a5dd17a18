// Per-minute bar charts (uPlot). Each chart has a scale of its own, so the
// human clicks are never flattened by thousands of bot clicks in the same
// minutes; a chart may stack several series (human and machine opens). The
// legend shows the latest minute, or the hovered one.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

import type { Point } from "./api";

export const HUMAN = "#2563eb";
export const BOT = "#ea580c";

/** One stacked series: its legend label, colour and value per bucket. */
export interface SeriesSpec {
  label: string;
  color: string;
  value: (p: Point) => number;
}

export class BarChart {
  private plot: uPlot | null = null;
  /** Per series, per bucket, for the legend: the plotted values are stack heights. */
  private values: number[][] = [];

  /**
   * `what` names the chart for screen readers ("human clicks"); `series` are
   * stacked in order, the first at the foot.
   */
  constructor(
    private readonly el: HTMLElement,
    private readonly what: string,
    private readonly series: SeriesSpec[],
    private readonly height: number,
  ) {
    new ResizeObserver(() => this.plot?.setSize({ width: this.width(), height: this.height })).observe(el);
  }

  private width(): number {
    return Math.max(this.el.clientWidth, 240);
  }

  update(points: Point[]): void {
    this.values = this.series.map((s) => points.map(s.value));
    // Stack heights, drawn tallest first so each lower part shows in front.
    const stacks: number[][] = [];
    let below = points.map(() => 0);
    for (const v of this.values) {
      below = below.map((b, i) => b + v[i]);
      stacks.push(below);
    }
    const data: uPlot.AlignedData = [points.map((p) => Date.parse(p.bucket_start) / 1000), ...stacks.reverse()];
    if (this.plot) {
      this.plot.setData(data);
    } else {
      this.plot = new uPlot(this.options(), data, this.el);
    }
    showLatest(this.plot);
    this.el.setAttribute("aria-label", this.describe(points));
  }

  private options(): uPlot.Options {
    const bars = uPlot.paths.bars!({ size: [0.75, 48], gap: 1 });
    const count = (k: number) => (_u: uPlot, _v: number | null, _s: number, idx: number | null) =>
      idx == null || this.values[k]?.[idx] == null ? "–" : this.values[k][idx].toLocaleString();
    const axis: uPlot.Axis = { stroke: "#475569", grid: { stroke: "#e2e8f0", width: 1 }, ticks: { show: false } };
    const plotted = this.series
      .map((s, k) => ({ s, k }))
      .reverse()
      .map(({ s, k }) => ({
        label: s.label,
        fill: s.color,
        stroke: s.color,
        width: 0,
        paths: bars,
        points: { show: false },
        value: count(k),
      }));
    return {
      width: this.width(),
      height: this.height,
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      scales: {
        // Half a minute either side, so the first and last bars are whole.
        x: { time: true, range: (_u, min, max) => [min - 30, max + 30] },
        y: { range: (_u, _min, max) => [0, Math.max(4, Math.ceil(max * 1.1))] },
      },
      axes: [axis, { ...axis, size: 56, values: (_u, ticks) => ticks.map((t) => t.toLocaleString()) }],
      series: [{ label: "Minute", value: (_u, v) => (v == null ? "–" : minute(v)) }, ...plotted],
      hooks: {
        // Leaving the chart puts the legend back on the latest minute.
        setCursor: [(u) => u.cursor.idx == null && showLatest(u)],
      },
    };
  }

  /** The chart in words, for screen readers. */
  private describe(points: Point[]): string {
    if (points.length === 0) return `${this.what} per minute: no data`;
    const totals = this.series.map((s) => `${points.reduce((n, p) => n + s.value(p), 0)} ${s.label.toLowerCase()}`);
    return `${this.what} per minute over ${points.length} minutes: ${totals.join(", ")}.`;
  }
}

function showLatest(u: uPlot): void {
  const last = u.data[0].length - 1;
  if (last >= 0 && u.cursor.idx == null) u.setLegend({ idx: last }, false);
}

function minute(secs: number): string {
  return new Date(secs * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}
