/**
 * The one event model every source, transport and consumer shares.
 *
 * A FreeSWITCH event is an ordered list of headers (duplicates allowed, as
 * switch_event_add_header allows) plus an optional body. Header lookup is
 * case-insensitive because switch_event_get_header is: PRESENCE_IN carries both
 * `Presence-Call-Direction` and `presence-call-direction`, and Lua scripts read
 * `answer-state` from events that carry `Answer-State`.
 */
export type Header = [name: string, value: string];

export class FsEvent {
  readonly headers: Header[];
  body: string | null;
  /**
   * The plain-format header block this event was parsed from (parsePlain), so the
   * multicast sink can send those bytes instead of re-encoding 60 headers per event.
   * Valid only while the headers are unchanged: add/set/delete drop it, and a length
   * check catches pushes on `headers` itself.
   */
  private plainHeaders: string | null = null;
  private plainHeaderCount = 0;

  constructor(headers: Header[] = [], body: string | null = null) {
    this.headers = headers;
    this.body = body;
  }

  /** For parsePlain: `text` is exactly the URL-encoded `Name: value\n` lines of these headers, in order. */
  rememberPlainHeaders(text: string): void {
    this.plainHeaders = text;
    this.plainHeaderCount = this.headers.length;
  }

  /** The header block this event was parsed from, if its headers have not changed since. */
  get parsedPlainHeaders(): string | null {
    return this.plainHeaders !== null && this.headers.length === this.plainHeaderCount ? this.plainHeaders : null;
  }

  static create(name: string, subclass?: string): FsEvent {
    const headers: Header[] = [['Event-Name', name]];
    if (subclass !== undefined) headers.push(['Event-Subclass', subclass]);
    return new FsEvent(headers);
  }

  get name(): string {
    return this.get('Event-Name') ?? '';
  }

  get subclass(): string | undefined {
    return this.get('Event-Subclass');
  }

  get coreUuid(): string | undefined {
    return this.get('Core-UUID');
  }

  /** Event-Sequence as a number, or undefined when absent or not numeric. */
  get sequence(): number | undefined {
    const raw = this.get('Event-Sequence');
    if (raw === undefined) return undefined;
    const n = Number(raw);
    return Number.isSafeInteger(n) ? n : undefined;
  }

  /** `Core-UUID:Event-Sequence`, the identity used for dedup and Nats-Msg-Id. */
  get key(): string | undefined {
    const uuid = this.coreUuid;
    const seq = this.get('Event-Sequence');
    return uuid === undefined || seq === undefined ? undefined : `${uuid}:${seq}`;
  }

  get(name: string): string | undefined {
    const headers = this.headers;
    // Exact match first: it is what FreeSWITCH emits nearly always and avoids lowercasing.
    for (let i = 0; i < headers.length; i++) {
      if (headers[i][0] === name) return headers[i][1];
    }
    const lower = name.toLowerCase();
    for (let i = 0; i < headers.length; i++) {
      const h = headers[i][0];
      if (h.length === lower.length && h.toLowerCase() === lower) return headers[i][1];
    }
    return undefined;
  }

  getAll(name: string): string[] {
    const lower = name.toLowerCase();
    const out: string[] = [];
    for (const [h, v] of this.headers) if (h.toLowerCase() === lower) out.push(v);
    return out;
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  add(name: string, value: string): this {
    this.plainHeaders = null;
    this.headers.push([name, value]);
    return this;
  }

  /** Replace the first header of that name (case-insensitive) or append it. */
  set(name: string, value: string): this {
    this.plainHeaders = null;
    const lower = name.toLowerCase();
    for (const header of this.headers) {
      if (header[0].toLowerCase() === lower) {
        header[1] = value;
        return this;
      }
    }
    this.headers.push([name, value]);
    return this;
  }

  /** Remove every header of that name (case-insensitive); returns how many went. */
  delete(name: string): number {
    this.plainHeaders = null;
    const lower = name.toLowerCase();
    let removed = 0;
    for (let i = this.headers.length - 1; i >= 0; i--) {
      if (this.headers[i][0].toLowerCase() === lower) {
        this.headers.splice(i, 1);
        removed++;
      }
    }
    return removed;
  }

  clone(): FsEvent {
    return new FsEvent(
      this.headers.map(([n, v]) => [n, v] as Header),
      this.body,
    );
  }
}
