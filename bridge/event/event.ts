import { urlDecode } from './url-encoding.js';

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

/**
 * Where a lazily decoded event came from: FreeSWITCH's plain serialization, already
 * checked line by line by parsePlain, so decoding it later cannot fail.
 */
export interface PlainSource {
  /** The serialization: header lines, then the tail (`Content-Length: N\n\n<body>` or `\n`). */
  readonly bytes: Buffer;
  /** The header block decoded as Latin-1, one char per byte, so its offsets are offsets in `bytes` too. */
  readonly text: string;
  /** Whether the header block is ASCII (FreeSWITCH URL-encodes every other byte); if not, names and values are decoded from `bytes` as UTF-8. */
  readonly ascii: boolean;
  /** Per header, in order: where its name starts, where its `: ` is, where its line ends (Content-Length excluded). */
  readonly lines: readonly number[];
  /** Where the header lines end in `bytes` when they can be sent on as they are (Content-Length last, final LF); -1 otherwise. */
  readonly linesEnd: number;
  /** Where the body starts in `bytes` and its length in bytes; -1 without a body. */
  readonly bodyStart: number;
  readonly bodyLength: number;
  /** Whether `bytes` is exactly what serializePlain writes for these headers and body, so it can be sent as is. */
  readonly canonical: boolean;
}

const EVENT_NAME = 'Event-Name';
/** What fromPlain passes the constructor, so it does not allocate a list it replaces. */
const NO_HEADERS: Header[] = [];
const EVENT_SUBCLASS = 'Event-Subclass';

/**
 * Events from ESL and from multicast arrive in FreeSWITCH's plain format, and the
 * forwarding path needs only a few routing headers of each (name, subclass, identity,
 * loop guard): the multicast datagram and the NATS payload are FreeSWITCH's own bytes.
 * So an event parsed from plain keeps its bytes and the offsets of its lines, and
 * builds its `[name, value]` list only when something asks for all of it (a consumer
 * iterating `headers`, a change, a re-serialization); `get` reads single headers from
 * the offsets. What is decoded is the same either way; only when differs.
 */
export class FsEvent {
  private list: Header[] | null;
  private source: PlainSource | null = null;
  /** Headers in `list` when it was built from `source`: a push onto `headers` changes the length. */
  private sourceCount = -1;
  private bodyValue: string | null | undefined;
  private nameValue: string | undefined = undefined;
  private lastLookup: string | null = null;
  private lastFound: string | undefined = undefined;
  private subclassValue: string | null | undefined = undefined;

  constructor(headers: Header[] = [], body: string | null = null) {
    this.list = headers;
    this.bodyValue = body;
  }

  /** For parsePlain: an event read from `source` on demand. */
  static fromPlain(source: PlainSource): FsEvent {
    const event = new FsEvent(NO_HEADERS);
    event.list = null;
    event.bodyValue = undefined;
    event.source = source;
    return event;
  }

  static create(name: string, subclass?: string): FsEvent {
    const headers: Header[] = [['Event-Name', name]];
    if (subclass !== undefined) headers.push(['Event-Subclass', subclass]);
    return new FsEvent(headers);
  }

  /** Every header in order. Reading it decodes a lazily parsed event in full. */
  get headers(): Header[] {
    return this.list ?? this.materialize();
  }

  get body(): string | null {
    if (this.bodyValue === undefined) {
      const source = this.source!;
      this.bodyValue = source.bodyStart < 0 ? null : source.bytes.toString('utf8', source.bodyStart, source.bodyStart + source.bodyLength);
    }
    return this.bodyValue;
  }

  set body(body: string | null) {
    this.bodyValue = body;
    this.forgetSource();
  }

  /**
   * FreeSWITCH's plain serialization of this event byte for byte, as it arrived, while
   * its headers and body are unchanged; null otherwise (then serialize it).
   */
  get plainBytes(): Buffer | null {
    const source = this.currentSource();
    return source !== null && source.canonical ? source.bytes : null;
  }

  /** The header lines of plainBytes (URL-encoded, each ending in LF), without the tail. */
  get plainHeaderBytes(): Buffer | null {
    const source = this.currentSource();
    return source === null || source.linesEnd < 0 ? null : source.bytes.subarray(0, source.linesEnd);
  }

  // Name and subclass are read several times per event on the forwarding path; they are
  // kept only while the event is undecoded, since a decoded list can be changed in place.
  get name(): string {
    if (this.list !== null) return this.get(EVENT_NAME) ?? '';
    return (this.nameValue ??= this.get(EVENT_NAME) ?? '');
  }

  get subclass(): string | undefined {
    if (this.list !== null) return this.get(EVENT_SUBCLASS);
    if (this.subclassValue === undefined) this.subclassValue = this.get(EVENT_SUBCLASS) ?? null;
    return this.subclassValue ?? undefined;
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
    const headers = this.list ?? (this.source!.ascii ? null : this.materialize());
    if (headers === null) return this.getFromSource(this.source!, name);
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
    this.headers.push([name, value]);
    this.forgetSource();
    return this;
  }

  /** Replace the first header of that name (case-insensitive) or append it. */
  set(name: string, value: string): this {
    const headers = this.headers;
    this.forgetSource();
    const lower = name.toLowerCase();
    for (const header of headers) {
      if (header[0].toLowerCase() === lower) {
        header[1] = value;
        return this;
      }
    }
    headers.push([name, value]);
    return this;
  }

  /** Remove every header of that name (case-insensitive); returns how many went. */
  delete(name: string): number {
    const headers = this.headers;
    this.forgetSource();
    const lower = name.toLowerCase();
    let removed = 0;
    for (let i = headers.length - 1; i >= 0; i--) {
      if (headers[i][0].toLowerCase() === lower) {
        headers.splice(i, 1);
        removed++;
      }
    }
    return removed;
  }

  clone(): FsEvent {
    // The source is never changed, so an undecoded copy can share it.
    if (this.list === null) {
      const copy = FsEvent.fromPlain(this.source!);
      copy.bodyValue = this.bodyValue;
      return copy;
    }
    return new FsEvent(
      this.headers.map(([n, v]) => [n, v] as Header),
      this.body,
    );
  }

  private currentSource(): PlainSource | null {
    const source = this.source;
    if (source === null) return null;
    if (this.list !== null && this.list.length !== this.sourceCount) {
      this.forgetSource();
      return null;
    }
    return source;
  }

  private forgetSource(): void {
    if (this.source === null) return;
    if (this.list === null) this.materialize();
    if (this.bodyValue === undefined) void this.body;
    this.source = null;
  }

  private materialize(): Header[] {
    const source = this.source!;
    const lines = source.lines;
    const headers: Header[] = new Array(lines.length / 3);
    for (let i = 0, h = 0; i < lines.length; i += 3, h++) headers[h] = [piece(source, lines[i], lines[i + 1]), valueAt(source, i)];
    this.list = headers;
    this.sourceCount = headers.length;
    return headers;
  }

  /** get() on the offsets of an ASCII block: the first exact match, else the first case-insensitive one, as on the list. */
  private getFromSource(source: PlainSource, name: string): string | undefined {
    // The forwarding path asks the same event for the same absent header (the loop guard)
    // once per stage: one remembered answer saves those scans.
    if (name === this.lastLookup) return this.lastFound;
    const { text, lines } = source;
    const length = name.length;
    const first = name.charCodeAt(0);
    const firstLower = first >= 65 && first <= 90 ? first + 32 : first;
    let lower: string | null = null;
    let caseless = -1;
    let exact = -1;
    // One walk for both answers: FreeSWITCH's names are rarely the same length, so most lines cost a length compare.
    for (let i = 0; i < lines.length; i += 3) {
      const start = lines[i];
      if (lines[i + 1] - start !== length) continue;
      const c = text.charCodeAt(start);
      if (c === first && text.startsWith(name, start)) {
        exact = i;
        break;
      }
      if (caseless < 0 && (first >= 128 || c === firstLower || c + 32 === firstLower) && equalsLowerCase(text, start, (lower ??= name.toLowerCase()))) caseless = i;
    }
    const at = exact >= 0 ? exact : caseless;
    const found = at < 0 ? undefined : valueAt(source, at);
    this.lastLookup = name;
    this.lastFound = found;
    return found;
  }
}

/** Whether the ASCII text at `start` lower-cases to `lower` (which is already lower case), without cutting it out. */
function equalsLowerCase(text: string, start: number, lower: string): boolean {
  for (let k = 0; k < lower.length; k++) {
    let c = text.charCodeAt(start + k);
    if (c >= 65 && c <= 90) c += 32;
    if (c !== lower.charCodeAt(k)) return false;
  }
  return true;
}

function piece(source: PlainSource, from: number, to: number): string {
  return source.ascii ? source.text.slice(from, to) : source.bytes.toString('utf8', from, to);
}

/** The URL-decoded value of the header whose offsets start at `lines[i]`. */
function valueAt(source: PlainSource, i: number): string {
  const raw = piece(source, source.lines[i + 1] + 2, source.lines[i + 2]);
  return raw.indexOf('%') < 0 ? raw : urlDecode(raw);
}
