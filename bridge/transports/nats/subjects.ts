/**
 * Subject layout: `<prefix>.<cluster>.<node>.<EVENT-NAME>` and for CUSTOM events
 * `<prefix>.<cluster>.<node>.CUSTOM.<subclass tokens>`, the subclass split on `::`
 * (`sofia::register` -> `sofia.register`), so subscribers can filter by node, event
 * and subclass with NATS wildcards.
 *
 * Token escaping (documented in docs/nats.md): every UTF-8 byte outside printable
 * ASCII (0x21-0x7E), and the characters `.`, `*`, `>` and `%`, become `%XX`
 * (uppercase hex), as in URL percent-encoding. An empty token is written as a
 * lone `%` (never produced otherwise, since a literal `%` is `%25`). The rule is
 * reversible: decodeToken(encodeToken(s)) === s for every string.
 */

const HEX = '0123456789ABCDEF';

function isPlainByte(byte: number): boolean {
  // 0x25 '%', 0x2A '*', 0x2E '.', 0x3E '>'
  return byte >= 0x21 && byte <= 0x7e && byte !== 0x25 && byte !== 0x2a && byte !== 0x2e && byte !== 0x3e;
}

export function encodeToken(text: string): string {
  if (text === '') return '%';
  let plain = true;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0x7e || !isPlainByte(c)) {
      plain = false;
      break;
    }
  }
  if (plain) return text;
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += isPlainByte(byte) ? String.fromCharCode(byte) : '%' + HEX[byte >> 4] + HEX[byte & 15];
  }
  return out;
}

export function decodeToken(token: string): string {
  if (token === '%') return '';
  if (!token.includes('%')) return token;
  // Escapes are UTF-8 bytes: collect each run of them and decode the run at once.
  let out = '';
  let run: number[] = [];
  for (let i = 0; i < token.length; i++) {
    if (token.charCodeAt(i) === 0x25 && /^[0-9A-Fa-f]{2}$/.test(token.slice(i + 1, i + 3))) {
      run.push(parseInt(token.slice(i + 1, i + 3), 16));
      i += 2;
      continue;
    }
    if (run.length > 0) {
      out += Buffer.from(run).toString('utf8');
      run = [];
    }
    out += token[i];
  }
  if (run.length > 0) out += Buffer.from(run).toString('utf8');
  return out;
}

/** A subject prefix must be one or more valid tokens (it is written as is). */
export function isValidPrefix(prefix: string): boolean {
  return prefix.split('.').every((t) => t !== '' && encodeToken(t) === t);
}

export interface SubjectParts {
  node: string;
  name: string;
  subclass: string | undefined;
}

/** Cache entries per mapper; beyond this, subjects are computed each time (bounded memory if a source invents names). */
const CACHE_LIMIT = 10_000;

export class SubjectMapper {
  /** `<prefix>.<cluster>` */
  readonly base: string;
  private readonly baseTokens: number;
  private readonly cache = new Map<string, Map<string, Map<string | undefined, string>>>();
  private cached = 0;

  constructor(
    readonly prefix: string,
    readonly cluster: string,
  ) {
    if (!isValidPrefix(prefix)) throw new RangeError(`NATS subject prefix ${JSON.stringify(prefix)} must be dot-separated tokens without whitespace, '*', '>' or '%'`);
    this.base = `${prefix}.${encodeToken(cluster)}`;
    this.baseTokens = this.base.split('.').length;
  }

  /** Every event of the cluster: the stream's subject. */
  get clusterWildcard(): string {
    return `${this.base}.>`;
  }

  /** Hot path: one nested-map lookup per event once warmed up. */
  subject(node: string, name: string, subclass: string | undefined): string {
    let byName = this.cache.get(node);
    let bySubclass = byName?.get(name);
    const hit = bySubclass?.get(subclass);
    if (hit !== undefined) return hit;
    const subject = this.build(node, name, subclass);
    if (this.cached < CACHE_LIMIT) {
      if (!byName) this.cache.set(node, (byName = new Map()));
      if (!bySubclass) byName.set(name, (bySubclass = new Map()));
      bySubclass.set(subclass, subject);
      this.cached++;
    }
    return subject;
  }

  private build(node: string, name: string, subclass: string | undefined): string {
    let subject = `${this.base}.${encodeToken(node)}.${encodeToken(name)}`;
    // Only CUSTOM events carry their subclass in the subject; others would only add noise.
    if (name === 'CUSTOM' && subclass !== undefined) subject += '.' + subclassTokens(subclass);
    return subject;
  }

  /**
   * Filter subject for subscribers: node and event name are optional (wildcards),
   * an event given as `sofia::register` or `CUSTOM sofia::register` means that subclass.
   */
  filter(options: { node?: string; event?: string }): string {
    const node = options.node === undefined ? '*' : encodeToken(options.node);
    if (options.event === undefined) return `${this.base}.${node}.>`;
    const event = options.event.trim().replace(/^CUSTOM\s+/i, '');
    if (event.includes('::')) return `${this.base}.${node}.CUSTOM.${subclassTokens(event)}`;
    const upper = event.toUpperCase();
    // CUSTOM alone: every subclass.
    if (upper === 'CUSTOM') return `${this.base}.${node}.CUSTOM.>`;
    return `${this.base}.${node}.${encodeToken(upper)}`;
  }

  /** Reverse of subject(); undefined when the subject is not under this prefix and cluster. */
  parse(subject: string): SubjectParts | undefined {
    if (!subject.startsWith(this.base + '.')) return undefined;
    const tokens = subject.split('.').slice(this.baseTokens);
    if (tokens.length < 2) return undefined;
    const node = decodeToken(tokens[0]);
    const name = decodeToken(tokens[1]);
    const subclass = tokens.length > 2 ? tokens.slice(2).map(decodeToken).join('::') : undefined;
    return { node, name, subclass };
  }
}

function subclassTokens(subclass: string): string {
  return subclass.split('::').map(encodeToken).join('.');
}
