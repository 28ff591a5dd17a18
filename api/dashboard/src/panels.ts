// The breakdown panels: one per dimension, each a table of its values ranked
// by human clicks (the server's order), with a bar for the human clicks and
// the bot clicks and opens beside. Clicking a value filters every panel on it
// (a chip above the panels shows the filter and removes it).

import type { Breakdown, BreakdownCounts, BreakdownRow, Dimension } from "./api";
import { DIMENSIONS } from "./api";
import { emptyRow, numberCell as num } from "./cells";

const TITLES: Record<Dimension, string> = {
  country: "Country",
  device: "Device",
  os: "Operating system",
  browser: "Browser",
  mail_client: "Mail client",
  referrer_domain: "Referrer",
  utm_source: "UTM source",
};

/** How a dimension's value reads; the API's value stays in `data-value`. */
const LABELS: Partial<Record<Dimension, Record<string, string>>> = {
  device: { desktop: "Desktop", mobile: "Mobile", tablet: "Tablet", bot: "Bot", other: "Other" },
  mail_client: { gmail: "Gmail", outlook: "Outlook", yahoo: "Yahoo Mail", apple_mail: "Apple Mail", other: "Other" },
};

export function title(d: Dimension): string {
  return TITLES[d];
}

export function label(d: Dimension, value: string): string {
  if (value === "unknown") return "Unknown";
  return LABELS[d]?.[value] ?? value;
}

/** The flag emoji of an ISO 3166 alpha-2 code (regional indicator symbols); "" for anything else. */
export function flag(code: string): string {
  if (!/^[A-Z]{2}$/.test(code)) return "";
  return String.fromCodePoint(...[...code].map((c) => 0x1f1e6 + c.charCodeAt(0) - 65));
}

export class Panels {
  private readonly bodies = new Map<Dimension, HTMLElement>();

  /** Builds a panel per dimension in `container`; `pick` is called with a clicked value. */
  constructor(
    container: HTMLElement,
    private readonly pick: (d: Dimension, value: string) => void,
  ) {
    for (const d of DIMENSIONS) {
      const section = document.createElement("section");
      section.className = "card panel";
      section.id = `panel-${d}`;
      const h = document.createElement("h2");
      h.id = `panel-${d}-heading`;
      h.textContent = TITLES[d];
      section.setAttribute("aria-labelledby", h.id);
      const table = document.createElement("table");
      table.className = "breakdown";
      const head = table.createTHead().insertRow();
      for (const [text, num] of [
        [TITLES[d], false],
        ["Human clicks", true],
        ["Bot", true],
        ["Human opens", true],
        ["Machine opens", true],
      ] as const) {
        const th = document.createElement("th");
        th.scope = "col";
        th.textContent = text;
        if (num) th.className = "num";
        head.append(th);
      }
      const body = table.createTBody();
      body.id = `breakdown-${d}`;
      this.bodies.set(d, body);
      const scroll = document.createElement("div");
      scroll.className = "table-scroll";
      scroll.append(table);
      section.append(h, scroll);
      container.append(section);
    }
  }

  render(d: Dimension, b: Breakdown): void {
    const max = Math.max(1, ...b.rows.map((r) => r.human_clicks));
    const rows = b.rows.map((r) => this.row(d, r, max));
    if (hasAny(b.other)) rows.push(otherRow(b.other, max));
    this.bodies.get(d)!.replaceChildren(...(rows.length ? rows : [emptyRow(5, "Nothing in this window yet.")]));
  }

  clear(): void {
    for (const body of this.bodies.values()) body.replaceChildren();
  }

  private row(d: Dimension, r: BreakdownRow, max: number): HTMLTableRowElement {
    const tr = document.createElement("tr");
    tr.dataset.value = r.value;
    const name = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link value";
    button.title = `Show only ${TITLES[d].toLowerCase()} ${label(d, r.value)}`;
    const mark = d === "country" ? flag(r.value) : "";
    if (mark) {
      const f = document.createElement("span");
      f.className = "flag";
      f.setAttribute("aria-hidden", "true");
      f.textContent = mark;
      button.append(f, " ");
    }
    button.append(label(d, r.value));
    button.addEventListener("click", () => this.pick(d, r.value));
    name.append(button);
    tr.append(name, barCell(r.human_clicks, max), num(r.bot_clicks), num(r.human_opens), num(r.machine_opens));
    return tr;
  }
}

function hasAny(c: BreakdownCounts): boolean {
  return c.clicks + c.human_opens + c.machine_opens > 0;
}

function otherRow(c: BreakdownCounts, max: number): HTMLTableRowElement {
  const tr = document.createElement("tr");
  tr.className = "other";
  tr.dataset.value = "";
  const name = document.createElement("td");
  name.className = "muted";
  name.textContent = "All others";
  tr.append(name, barCell(c.human_clicks, max), num(c.bot_clicks), num(c.human_opens), num(c.machine_opens));
  return tr;
}

/** The human clicks as a number over a bar scaled to the panel's largest. */
function barCell(n: number, max: number): HTMLTableCellElement {
  const td = num(n);
  td.classList.add("bar");
  td.style.setProperty("--share", `${((100 * n) / max).toFixed(1)}%`);
  return td;
}
