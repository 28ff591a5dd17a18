// The live dashboard: pick a campaign, then poll its stats, top links and
// breakdowns. Human clicks have a chart of their own, so a scanner's sweep
// never flattens them; a value clicked in a breakdown panel filters the
// panels (kept in the address as `?country=DE`, the API's own parameter).
//
// Credentials come from the URL (`/dashboard?client=acme&key=rk_…`) or the
// sign-in form and are kept in local storage; the key is then removed from
// the address bar so it does not linger in history or screenshots.

import "./style.css";

import {
  ApiError,
  breakdown,
  campaignStats,
  campaigns,
  DIMENSIONS,
  topLinks,
  type Breakdown,
  type Credentials,
  type Dimension,
  type Stats,
  type TopLink,
} from "./api";
import { emptyRow, numberCell } from "./cells";
import { BarChart, BOT, HUMAN } from "./chart";
import { label, Panels, title } from "./panels";

const POLL_MS = 2500;
const TOP_LINKS = 10;
const BREAKDOWN_ROWS = 8;
const MACHINE_OPEN = "#94a3b8";
const STORAGE_KEY = "ricochet.dashboard";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  signIn: $<HTMLFormElement>("sign-in"),
  signInClient: $<HTMLInputElement>("sign-in-client"),
  signInKey: $<HTMLInputElement>("sign-in-key"),
  signInError: $("sign-in-error"),
  signOut: $<HTMLButtonElement>("sign-out"),
  clientLabel: $("client-label"),
  dashboard: $("dashboard"),
  campaign: $<HTMLSelectElement>("campaign"),
  window: $<HTMLSelectElement>("window"),
  status: $("status"),
  updated: $("updated"),
  topLinks: $("top-links"),
  filters: $("filters"),
};
const charts = [
  new BarChart($("chart-human"), "Human clicks", [{ label: "Human", color: HUMAN, value: (p) => p.human_clicks }], 260),
  new BarChart($("chart-bot"), "Bot clicks", [{ label: "Bot", color: BOT, value: (p) => p.bot_clicks }], 180),
  new BarChart(
    $("chart-opens"),
    "Opens",
    [
      { label: "Human", color: HUMAN, value: (p) => p.human_opens },
      { label: "Machine", color: MACHINE_OPEN, value: (p) => p.machine_opens },
    ],
    180,
  ),
];
const panels = new Panels($("panels"), (d, value) => {
  filters.set(d, value);
  showFilters();
  rewatch();
});

/** The breakdown filters, dimension → value, as in the address bar. */
const filters = new Map<Dimension, string>();
let rewatch: () => void = () => {};

/** Bumped whenever what is shown changes, so answers to older requests are dropped. */
let generation = 0;
let inFlight: AbortController | null = null;
let timer: number | undefined;

function stop(): void {
  generation++;
  inFlight?.abort();
  inFlight = null;
  clearTimeout(timer);
}

// ------------------------------------------------------------------ credentials

function storedCredentials(): Credentials | null {
  try {
    const c = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? "null");
    return typeof c?.client === "string" && typeof c?.key === "string" ? c : null;
  } catch {
    return null;
  }
}

function setUrlParams(change: Record<string, string | null>): void {
  const url = new URL(location.href);
  for (const [k, v] of Object.entries(change)) {
    if (v === null) url.searchParams.delete(k);
    else url.searchParams.set(k, v);
  }
  history.replaceState(null, "", url);
}

function start(): void {
  const params = new URLSearchParams(location.search);
  for (const d of DIMENSIONS) {
    const v = params.get(d);
    if (v) filters.set(d, v);
  }
  showFilters();
  const client = params.get("client");
  const key = params.get("key");
  if (client && key) {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ client, key }));
    setUrlParams({ key: null });
  }
  const creds = storedCredentials();
  if (creds && (!client || client === creds.client)) {
    void openDashboard(creds, params.get("campaign"));
  } else {
    showSignIn(client ?? "", "");
  }
}

function showSignIn(client: string, error: string): void {
  stop();
  ui.dashboard.hidden = true;
  ui.signOut.hidden = true;
  ui.clientLabel.hidden = true;
  ui.signIn.hidden = false;
  ui.signInClient.value = client;
  ui.signInKey.value = "";
  ui.signInError.textContent = error;
  (client ? ui.signInKey : ui.signInClient).focus();
}

ui.signIn.addEventListener("submit", (e) => {
  e.preventDefault();
  const creds = { client: ui.signInClient.value.trim(), key: ui.signInKey.value.trim() };
  localStorage.setItem(STORAGE_KEY, JSON.stringify(creds));
  setUrlParams({ client: creds.client, campaign: null });
  void openDashboard(creds, null);
});

ui.signOut.addEventListener("click", () => {
  const client = storedCredentials()?.client ?? "";
  localStorage.removeItem(STORAGE_KEY);
  setUrlParams({ campaign: null });
  showSignIn(client, "");
});

/** A rejected key or an unknown client sends the user back to the form. */
function handleAuthError(creds: Credentials, e: unknown): boolean {
  if (!(e instanceof ApiError) || (e.status !== 401 && e.status !== 404)) return false;
  localStorage.removeItem(STORAGE_KEY);
  const why =
    e.status === 401 ? "That API key was not accepted." : `This key cannot see a client called “${creds.client}”.`;
  showSignIn(creds.client, why);
  return true;
}

// ------------------------------------------------------------------ campaigns

async function openDashboard(creds: Credentials, wanted: string | null): Promise<void> {
  stop();
  const gen = generation;
  ui.signIn.hidden = true;
  ui.dashboard.hidden = false;
  ui.signOut.hidden = false;
  ui.clientLabel.hidden = false;
  ui.clientLabel.textContent = `Client: ${creds.client}`;
  setStatus("Loading campaigns…", false);
  let list;
  try {
    list = (await campaigns(creds)).campaigns;
  } catch (e) {
    if (gen !== generation || handleAuthError(creds, e)) return;
    setStatus(`Could not load campaigns: ${message(e)}. Retrying…`, true);
    timer = window.setTimeout(() => void openDashboard(creds, wanted), 5000);
    return;
  }
  if (gen !== generation) return;
  if (list.length === 0) {
    setStatus("This client has no campaigns yet. Checking again shortly…", false);
    timer = window.setTimeout(() => void openDashboard(creds, wanted), 10_000);
    return;
  }
  ui.campaign.replaceChildren(
    ...list.map((c) => new Option(`${c.campaign_id} (${c.links} link${c.links === 1 ? "" : "s"})`, c.campaign_id)),
  );
  ui.campaign.value = list.some((c) => c.campaign_id === wanted) ? wanted! : list[0].campaign_id;
  ui.campaign.onchange = () => {
    setUrlParams({ campaign: ui.campaign.value });
    watch(creds);
  };
  ui.window.onchange = () => watch(creds);
  rewatch = () => watch(creds);
  watch(creds);
}

// ------------------------------------------------------------------ polling

/** Starts polling the selected campaign, dropping whatever was polled before. */
function watch(creds: Credentials): void {
  stop();
  clearNumbers();
  setStatus("Loading…", false);
  void poll(creds, ui.campaign.value, Number(ui.window.value), generation);
}

async function poll(creds: Credentials, campaign: string, windowSecs: number, gen: number): Promise<void> {
  const from = Math.floor(Date.now() / 1000) - windowSecs;
  const abort = new AbortController();
  inFlight = abort;
  try {
    const [stats, top, ...breakdowns] = await Promise.all([
      campaignStats(creds, campaign, from, abort.signal),
      topLinks(creds, campaign, from, TOP_LINKS, abort.signal),
      ...DIMENSIONS.map((d) => breakdown(creds, campaign, d, from, filters, BREAKDOWN_ROWS, abort.signal)),
    ]);
    if (gen !== generation) return;
    render(stats, top.links, breakdowns);
    setStatus("Live", false);
    ui.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (gen !== generation || handleAuthError(creds, e)) return;
    setStatus(`Could not refresh: ${message(e)}. Retrying…`, true);
  }
  timer = window.setTimeout(() => whenVisible(() => void poll(creds, campaign, windowSecs, gen)), POLL_MS);
}

/** Runs `f` now, or once the tab is visible again: a background tab does not poll. */
function whenVisible(f: () => void): void {
  if (document.visibilityState !== "hidden") f();
  else document.addEventListener("visibilitychange", () => whenVisible(f), { once: true });
}

// ------------------------------------------------------------------ rendering

// Human first: what senders decide on. Bot clicks say why on hover.
const TOTALS = [
  "human_clicks",
  "unique_human_recipients",
  "bot_clicks",
  "clicks",
  "human_opens",
  "unique_human_openers",
  "machine_opens",
  "opens",
  "unique_recipients",
] as const;

function render(stats: Stats, links: TopLink[], breakdowns: Breakdown[]): void {
  for (const name of TOTALS) showNumber($(`total-${name.replace(/_/g, "-")}`), stats.totals[name]);
  $("total-bot-clicks").title = reasons(stats.totals.bot_by_reason ?? {});
  $("total-machine-opens").title = reasons({ ...stats.totals.machine_opens_by_reason });
  for (const c of charts) c.update(stats.series);
  ui.topLinks.replaceChildren(...(links.length ? links.map(linkRow) : [emptyRow(5, "No clicks in this window yet.")]));
  for (const b of breakdowns) panels.render(b.by, b);
}

/** "reason: n" lines, largest first, for a tooltip. */
function reasons(by: Record<string, number>): string {
  return Object.entries(by)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([reason, n]) => `${reason.replace(/_/g, " ")}: ${n.toLocaleString()}`)
    .join("\n");
}

/** The filter chips; each removes its filter when clicked. */
function showFilters(): void {
  const chips = [...filters].map(([d, v]) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.dataset.dimension = d;
    chip.dataset.value = v;
    chip.title = "Remove this filter";
    chip.textContent = `${title(d)}: ${label(d, v)} ×`;
    chip.addEventListener("click", () => {
      filters.delete(d);
      showFilters();
      rewatch();
    });
    return chip;
  });
  ui.filters.replaceChildren(...chips);
  ui.filters.hidden = chips.length === 0;
  setUrlParams(Object.fromEntries(DIMENSIONS.map((d) => [d, filters.get(d) ?? null])));
}

function showNumber(el: HTMLElement, n: number): void {
  el.textContent = n.toLocaleString();
  el.dataset.value = String(n);
}

function clearNumbers(): void {
  for (const name of TOTALS) {
    const el = $(`total-${name.replace(/_/g, "-")}`);
    el.textContent = "–";
    delete el.dataset.value;
  }
  panels.clear();
}

function linkRow(l: TopLink): HTMLTableRowElement {
  const row = document.createElement("tr");
  const code = document.createElement("td");
  code.className = "code";
  code.textContent = l.code ?? l.link_id;
  const dest = document.createElement("td");
  dest.className = "destination";
  const url = l.destination_url ?? "";
  if (/^https?:\/\//i.test(url)) {
    const a = document.createElement("a");
    a.href = url;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    a.textContent = url;
    dest.append(a);
    dest.title = url;
  } else {
    dest.textContent = url || "–";
  }
  row.append(code, dest, numberCell(l.clicks), numberCell(l.human_clicks), numberCell(l.clicks - l.human_clicks));
  return row;
}

function setStatus(text: string, error: boolean): void {
  if (ui.status.textContent !== text) ui.status.textContent = text;
  ui.status.classList.toggle("error", error);
  ui.status.classList.toggle("live", text === "Live");
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

start();
