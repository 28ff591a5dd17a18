// The aggregator's client API, as the dashboard uses it. Same origin: the
// aggregator serves this page, so paths are absolute and there is no CORS.

export interface Credentials {
  client: string;
  key: string;
}

export interface Campaign {
  campaign_id: string;
  links: number;
}

/** Machine opens by why they were a machine's; they sum to `machine_opens`. */
export interface MachineOpens {
  apple_privacy: number;
  scanner: number;
  prefetch: number;
}

export interface Counts {
  clicks: number;
  human_clicks: number;
  bot_clicks: number;
  opens: number;
  human_opens: number;
  machine_opens: number;
  machine_opens_by_reason: MachineOpens;
}

export interface Point extends Counts {
  bucket_start: string;
}

export interface Stats {
  granularity: string;
  from: string;
  to: string;
  series: Point[];
  totals: Counts & {
    unique_human_recipients: number;
    unique_recipients: number;
    unique_human_openers: number;
    /** Bot clicks per verdict reason ("head", "burst", …). */
    bot_by_reason: Record<string, number>;
  };
}

export interface TopLink {
  link_id: string;
  /** Null when this process does not know the link (yet). */
  code: string | null;
  destination_url: string | null;
  clicks: number;
  human_clicks: number;
}

/** A failed request, with the HTTP status (0: no answer) and the server's message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function get<T>(creds: Credentials, path: string, signal?: AbortSignal): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, {
      headers: { Authorization: `Bearer ${creds.key}`, Accept: "application/json" },
      signal,
    });
  } catch (e) {
    if (signal?.aborted) throw e;
    throw new ApiError(0, "the server did not answer");
  }
  if (!res.ok) {
    // Errors are {"error": {"code", "message"}}; fall back to the status line.
    const body = await res.json().catch(() => null);
    throw new ApiError(res.status, body?.error?.message ?? `${res.status} ${res.statusText}`);
  }
  return res.json() as Promise<T>;
}

const seg = encodeURIComponent;

export function campaigns(creds: Credentials, signal?: AbortSignal): Promise<{ campaigns: Campaign[] }> {
  return get(creds, `/v1/clients/${seg(creds.client)}/campaigns`, signal);
}

/** Stats and top links of one campaign from `from` (Unix seconds) to the server's now. */
export function campaignStats(creds: Credentials, campaign: string, from: number, signal?: AbortSignal): Promise<Stats> {
  const q = new URLSearchParams({ from: String(from), granularity: "minute" });
  return get(creds, `/v1/clients/${seg(creds.client)}/campaigns/${seg(campaign)}/stats?${q}`, signal);
}

export function topLinks(
  creds: Credentials,
  campaign: string,
  from: number,
  limit: number,
  signal?: AbortSignal,
): Promise<{ links: TopLink[] }> {
  const q = new URLSearchParams({ from: String(from), limit: String(limit) });
  return get(creds, `/v1/clients/${seg(creds.client)}/campaigns/${seg(campaign)}/top-links?${q}`, signal);
}

/** The dimensions the dashboard has a panel for, in the API's names. */
export const DIMENSIONS = ["country", "device", "os", "browser", "mail_client", "referrer_domain", "utm_source"] as const;
export type Dimension = (typeof DIMENSIONS)[number];

export interface BreakdownCounts {
  human_clicks: number;
  bot_clicks: number;
  clicks: number;
  unique_human_recipients: number;
  human_opens: number;
  machine_opens: number;
  machine_opens_by_reason: MachineOpens;
  unique_human_openers: number;
}

export interface BreakdownRow extends BreakdownCounts {
  /** ISO 3166 alpha-2 for countries, lowercase names for devices and mail clients, "unknown" when not known. */
  value: string;
}

export interface Breakdown {
  by: Dimension;
  rows: BreakdownRow[];
  /** Every value past the listed rows, summed. */
  other: BreakdownCounts;
}

/**
 * One campaign's clicks and opens by `by`, machines included (ranked human
 * first by the server), from `from` (Unix seconds) to the server's now,
 * filtered on `filters` (dimension → value).
 */
export function breakdown(
  creds: Credentials,
  campaign: string,
  by: Dimension,
  from: number,
  filters: ReadonlyMap<Dimension, string>,
  limit: number,
  signal?: AbortSignal,
): Promise<Breakdown> {
  const q = new URLSearchParams({ by, from: String(from), human_only: "false", limit: String(limit) });
  for (const [d, v] of filters) q.set(d, v);
  return get(creds, `/v1/clients/${seg(creds.client)}/campaigns/${seg(campaign)}/breakdown?${q}`, signal);
}
