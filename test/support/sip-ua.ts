/**
 * A small SIP user agent over UDP (node:dgram) for the real-FreeSWITCH suite: what a
 * desk phone does to FreeSWITCH, and nothing more. REGISTER with digest auth,
 * SUBSCRIBE to dialog / presence / message-summary collecting every NOTIFY with the
 * time it arrived and its parsed state, INVITE (answer, BYE, CANCEL) as caller and
 * callee. No RTP is sent (an RTP port is bound and drained), fine for calls shorter
 * than FreeSWITCH's rtp-timeout.
 *
 * Hand-written because no maintained Node SIP stack is small enough to embed in a test
 * (sip.js targets browsers over WebSocket, drachtio needs its C++ server); a test UA
 * needs one transport, one digest retry and bounded waits.
 *
 *   const phone = await SipUa.open({ user: '1000', password: '1234', domain: '127.0.0.1',
 *                                    localIp: '10.99.0.3', server: { host: '10.99.0.1', port: 5060 } });
 *   await phone.register(120);
 *   const sub = await phone.subscribe('1001', 'dialog');
 *   await sub.waitFor((n) => n.dialogs.some((d) => d.state === 'confirmed'));
 *   const call = await phone.call('1001');  await call.answered;  await call.hangup();
 *   await phone.close();                    // unsubscribes, unregisters, closes the socket
 */
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';

export interface SipServer {
  host: string;
  port: number;
}

export interface SipUaOptions {
  user: string;
  password: string;
  domain: string;
  /** Address the socket binds (the phones' address). */
  localIp: string;
  /** 0: ephemeral. */
  localPort?: number;
  /** Where requests go (the registrar / proxy). */
  server: SipServer;
  /** Answer incoming INVITEs: 180 at once, 200 after `ringMs`. Otherwise they get 486. */
  autoAnswer?: { ringMs: number } | false;
  /** Per-transaction limit. */
  transactionTimeoutMs?: number;
}

/** One parsed SIP message. Header names are kept as received; lookups are case-insensitive and know the compact forms. */
export class SipMessage {
  readonly headers: [string, string][] = [];
  readonly firstLine: string;
  readonly body: string;
  readonly isRequest: boolean;
  readonly method: string;
  readonly status: number;
  readonly reason: string;
  readonly requestUri: string;

  private static readonly COMPACT: Record<string, string> = { v: 'via', f: 'from', t: 'to', i: 'call-id', m: 'contact', l: 'content-length', c: 'content-type', e: 'content-encoding', k: 'supported', o: 'event' };

  constructor(
    raw: Buffer,
    readonly source: { address: string; port: number },
  ) {
    const text = raw.toString('utf8');
    const split = text.indexOf('\r\n\r\n');
    const head = split >= 0 ? text.slice(0, split) : text;
    let body = split >= 0 ? text.slice(split + 4) : '';
    const lines = head.split('\r\n');
    this.firstLine = lines[0] ?? '';
    for (const line of lines.slice(1)) {
      if ((line.startsWith(' ') || line.startsWith('\t')) && this.headers.length > 0) {
        const last = this.headers[this.headers.length - 1];
        last[1] += ' ' + line.trim();
        continue;
      }
      const colon = line.indexOf(':');
      if (colon > 0) this.headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
    }
    const length = Number(this.get('content-length'));
    if (Number.isInteger(length) && length >= 0) body = Buffer.from(body, 'utf8').subarray(0, length).toString('utf8');
    this.body = body;
    const parts = this.firstLine.split(' ');
    this.isRequest = !this.firstLine.startsWith('SIP/');
    if (this.isRequest) {
      this.method = parts[0] ?? '';
      this.requestUri = parts[1] ?? '';
      this.status = 0;
      this.reason = '';
    } else {
      this.status = Number(parts[1]);
      this.reason = parts.slice(2).join(' ');
      this.method = this.cseq().method;
      this.requestUri = '';
    }
  }

  private static norm(name: string): string {
    const lower = name.toLowerCase();
    return SipMessage.COMPACT[lower] ?? lower;
  }

  get(name: string): string | undefined {
    const wanted = SipMessage.norm(name);
    return this.headers.find(([n]) => SipMessage.norm(n) === wanted)?.[1];
  }

  getAll(name: string): string[] {
    const wanted = SipMessage.norm(name);
    return this.headers.filter(([n]) => SipMessage.norm(n) === wanted).map(([, v]) => v);
  }

  cseq(): { seq: number; method: string } {
    const [seq, method] = (this.get('cseq') ?? '0 X').split(/\s+/);
    return { seq: Number(seq), method: method ?? '' };
  }

  tag(header: 'from' | 'to'): string | undefined {
    return /;\s*tag=([^;>\s]+)/.exec(this.get(header) ?? '')?.[1];
  }
}

/** One `<dialog>` of an RFC 4235 dialog-info body. */
export interface DialogInfo {
  id: string;
  state: string;
  direction: string | undefined;
}

/** A NOTIFY as the phone saw it. */
export interface Notify {
  /** Date.now() on arrival. */
  at: number;
  /** Who sent it, `address:port`. */
  source: string;
  event: string;
  subscriptionState: string;
  contentType: string;
  body: string;
  /** dialog-info: every dialog with its state and direction (empty: idle). */
  dialogs: DialogInfo[];
  /** pidf: the person's note (`<dm:note>`), e.g. "Talk 1001". */
  note: string | undefined;
  /** pidf: basic status, open / closed. */
  basic: string | undefined;
  /** message-summary: Messages-Waiting yes/no and the Voice-Message counts. */
  messagesWaiting: boolean | undefined;
  voiceMessage: string | undefined;
}

export function parseNotifyBody(body: string): Pick<Notify, 'dialogs' | 'note' | 'basic' | 'messagesWaiting' | 'voiceMessage'> {
  const dialogs: DialogInfo[] = [];
  for (const match of body.matchAll(/<dialog\s([^>]*)>([\s\S]*?)<\/dialog>/g)) {
    const attributes = match[1];
    dialogs.push({
      id: /\bid="([^"]*)"/.exec(attributes)?.[1] ?? '',
      direction: /\bdirection="([^"]*)"/.exec(attributes)?.[1],
      state: /<state[^>]*>([^<]*)<\/state>/.exec(match[2])?.[1] ?? '',
    });
  }
  const waiting = /^Messages-Waiting:\s*(\w+)/im.exec(body)?.[1];
  return {
    dialogs,
    note: /<(?:dm:)?note>([^<]*)<\/(?:dm:)?note>/.exec(body)?.[1],
    basic: /<basic>([^<]*)<\/basic>/.exec(body)?.[1],
    messagesWaiting: waiting === undefined ? undefined : waiting.toLowerCase() === 'yes',
    voiceMessage: /^Voice-Message:\s*(.+?)\s*$/im.exec(body)?.[1],
  };
}

function token(bytes = 6): string {
  return randomBytes(bytes).toString('hex');
}

function md5(text: string): string {
  return createHash('md5').update(text).digest('hex');
}

function parseChallenge(header: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const match of header.replace(/^\s*Digest\s+/i, '').matchAll(/(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]+))/g)) {
    out[match[1].toLowerCase()] = match[2] ?? match[3];
  }
  return out;
}

function hostPortOf(uri: string): SipServer | undefined {
  const match = /sips?:(?:[^@;>]+@)?([^:;>]+)(?::(\d+))?/.exec(uri);
  return match ? { host: match[1], port: Number(match[2] ?? 5060) } : undefined;
}

function uriOf(nameAddr: string): string {
  return /<([^>]+)>/.exec(nameAddr)?.[1] ?? nameAddr.split(';')[0].trim();
}

class Waiters<T> {
  private readonly items: T[] = [];
  private readonly pending: { match: (item: T) => boolean; from: number; resolve: (item: T) => void }[] = [];

  get all(): readonly T[] {
    return this.items;
  }

  push(item: T): void {
    const index = this.items.push(item) - 1;
    for (let i = this.pending.length - 1; i >= 0; i--) {
      const waiter = this.pending[i];
      if (index >= waiter.from && waiter.match(item)) {
        this.pending.splice(i, 1);
        waiter.resolve(item);
      }
    }
  }

  waitFor(match: (item: T) => boolean, timeoutMs: number, from: number, what: string): Promise<T> {
    const found = this.items.slice(from).find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = { match, from, resolve: (item: T) => (clearTimeout(timer), resolve(item)) };
      const timer = setTimeout(() => {
        this.pending.splice(this.pending.indexOf(waiter), 1);
        reject(new Error(`${what}: nothing matching within ${timeoutMs} ms (have ${this.items.length})`));
      }, timeoutMs);
      this.pending.push(waiter);
    });
  }
}

export class SipError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'SipError';
  }
}

interface Transaction {
  branch: string;
  method: string;
  resolve: (message: SipMessage | null) => void;
  onProvisional?: (message: SipMessage) => void;
  retransmit: NodeJS.Timeout | null;
  deadline: NodeJS.Timeout;
  /** INVITE stops retransmitting after the first provisional response. */
  provisional: boolean;
}

interface RequestSpec {
  method: string;
  uri: string;
  from: string;
  to: string;
  callId: string;
  headers?: string[];
  body?: string;
  contentType?: string;
  destination?: SipServer;
  timeoutMs?: number;
  onProvisional?: (message: SipMessage) => void;
}

/** A SUBSCRIBE dialog: every NOTIFY it received, in order. */
export class Subscription {
  private readonly notifies = new Waiters<Notify>();
  /** Remote tag learnt from the 2xx or the first NOTIFY. */
  toHeader: string;

  constructor(
    private readonly ua: SipUa,
    readonly target: string,
    readonly event: string,
    readonly callId: string,
    readonly from: string,
    toHeader: string,
    readonly accept: string,
  ) {
    this.toHeader = toHeader;
  }

  get received(): readonly Notify[] {
    return this.notifies.all;
  }

  /** First NOTIFY at or after index `from` matching `match`. */
  waitFor(match: (notify: Notify) => boolean, timeoutMs = 10_000, from = 0): Promise<Notify> {
    return this.notifies.waitFor(match, timeoutMs, from, `${this.event} NOTIFY for ${this.target}`);
  }

  /** SUBSCRIBE with Expires 0; the final NOTIFY (terminated) is collected too. */
  async unsubscribe(): Promise<void> {
    await this.ua.refreshSubscription(this, 0);
  }

  /** @internal */
  deliver(notify: Notify): void {
    this.notifies.push(notify);
  }
}

export interface CallLeg {
  callId: string;
  /** Resolves with the final 2xx (outgoing calls) or when the callee sends 200 (incoming). */
  answered: Promise<void>;
  /** Resolves when the call ended (BYE either way, CANCEL, or a failure response). */
  ended: Promise<string>;
  /** BYE (when answered) or CANCEL (while ringing). */
  hangup(): Promise<void>;
}

interface Dialog {
  callId: string;
  localTag: string;
  localUri: string;
  remoteNameAddr: string;
  remoteTarget: string;
  destination: SipServer;
  answered: boolean;
  ended: boolean;
  settleAnswered: () => void;
  settleEnded: (why: string) => void;
  /** For a call we answer: the INVITE, to resend our 200 until ACK. */
  invite?: SipMessage;
  lastResponse?: string;
  acked?: boolean;
  /** For a call we place: the INVITE transaction, to CANCEL it. */
  pendingInvite?: { uri: string; from: string; to: string; seq: number; branch: string; destination: SipServer };
}

export class SipUa {
  private readonly socket: dgram.Socket;
  private readonly rtp: dgram.Socket;
  private readonly transactions = new Map<string, Transaction>();
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly dialogs = new Map<string, Dialog>();
  private readonly incoming = new Waiters<CallLeg>();
  /** `address:port` the last incoming INVITE came from (which node rang this phone). */
  lastInviteFrom: string | null = null;
  /** NOTIFYs outside any subscription of ours (unsolicited MWI to a registered phone, say). */
  readonly unsolicited: Notify[] = [];
  private cseq = Math.floor(Math.random() * 1000) + 1;
  private registeredExpires = 0;
  private closed = false;
  readonly localPort: number;

  private constructor(
    private readonly options: SipUaOptions,
    socket: dgram.Socket,
    rtp: dgram.Socket,
  ) {
    this.socket = socket;
    this.rtp = rtp;
    this.localPort = socket.address().port;
    socket.on('message', (raw, info) => this.onMessage(raw, info));
    rtp.on('message', () => undefined);
  }

  static async open(options: SipUaOptions): Promise<SipUa> {
    const bind = (port: number) =>
      new Promise<dgram.Socket>((resolve, reject) => {
        const socket = dgram.createSocket('udp4');
        socket.once('error', reject);
        socket.bind(port, options.localIp, () => {
          socket.off('error', reject);
          resolve(socket);
        });
      });
    const socket = await bind(options.localPort ?? 0);
    const rtp = await bind(0);
    return new SipUa(options, socket, rtp);
  }

  get user(): string {
    return this.options.user;
  }

  private get aor(): string {
    return `sip:${this.options.user}@${this.options.domain}`;
  }

  private get contact(): string {
    return `<sip:${this.options.user}@${this.options.localIp}:${this.localPort}>`;
  }

  /** REGISTER (0 unregisters); resolves with the expiry the registrar granted. */
  async register(expires = 300): Promise<number> {
    const response = await this.request({
      method: 'REGISTER',
      uri: `sip:${this.options.domain}`,
      from: `<${this.aor}>;tag=${token(4)}`,
      to: `<${this.aor}>`,
      callId: `reg-${this.options.user}-${this.localPort}@${this.options.localIp}`,
      headers: [`Contact: ${this.contact};expires=${expires}`, `Expires: ${expires}`, 'Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, MESSAGE'],
    });
    this.expectSuccess(response, 'REGISTER');
    this.registeredExpires = expires;
    const mine = response.getAll('contact').find((c) => c.includes(`${this.options.localIp}:${this.localPort}`));
    return Number(/expires=(\d+)/.exec(mine ?? '')?.[1] ?? expires);
  }

  async subscribe(target: string, event: 'dialog' | 'presence' | 'message-summary', expires = 600): Promise<Subscription> {
    const accept = { dialog: 'application/dialog-info+xml', presence: 'application/pidf+xml', 'message-summary': 'application/simple-message-summary' }[event];
    const uri = `sip:${target}@${this.options.domain}`;
    const subscription = new Subscription(this, target, event, `sub-${token()}@${this.options.localIp}`, `<${this.aor}>;tag=${token(4)}`, `<${uri}>`, accept);
    // NOTIFYs may overtake the 2xx: route them by Call-ID from the start.
    this.subscriptions.set(subscription.callId, subscription);
    await this.refreshSubscription(subscription, expires);
    return subscription;
  }

  /** @internal SUBSCRIBE (refresh or, with 0, end) within the subscription's dialog. */
  async refreshSubscription(subscription: Subscription, expires: number): Promise<void> {
    const response = await this.request({
      method: 'SUBSCRIBE',
      uri: `sip:${subscription.target}@${this.options.domain}`,
      from: subscription.from,
      to: subscription.toHeader,
      callId: subscription.callId,
      headers: [`Contact: ${this.contact}`, `Event: ${subscription.event}`, `Accept: ${subscription.accept}`, `Expires: ${expires}`, 'Allow-Events: presence, dialog, message-summary'],
    });
    this.expectSuccess(response, `SUBSCRIBE ${subscription.event} ${subscription.target}`);
    if (response.tag('to')) subscription.toHeader = response.get('to') ?? subscription.toHeader;
  }

  /** INVITE `target`. The returned leg's `answered` rejects when the call fails. */
  async call(target: string, options: { timeoutMs?: number } = {}): Promise<CallLeg> {
    const uri = `sip:${target}@${this.options.domain}`;
    const callId = `call-${token()}@${this.options.localIp}`;
    const localTag = token(4);
    const from = `<${this.aor}>;tag=${localTag}`;
    const leg = this.newDialog({ callId, localTag, localUri: this.aor, remoteNameAddr: `<${uri}>`, remoteTarget: uri, destination: this.options.server, answered: false, ended: false });
    const response = this.request({
      method: 'INVITE',
      uri,
      from,
      to: `<${uri}>`,
      callId,
      headers: [`Contact: ${this.contact}`, 'Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY'],
      body: this.sdp(),
      contentType: 'application/sdp',
      timeoutMs: options.timeoutMs ?? 60_000,
    });
    void response.then(
      (final) => {
        const dialog = this.dialogs.get(callId);
        if (!dialog) return;
        if (final.status >= 300) {
          dialog.settleEnded(`${final.status} ${final.reason}`);
          return;
        }
        dialog.remoteNameAddr = final.get('to') ?? dialog.remoteNameAddr;
        dialog.remoteTarget = uriOf(final.get('contact') ?? '') || dialog.remoteTarget;
        dialog.destination = hostPortOf(dialog.remoteTarget) ?? dialog.destination;
        this.sendAck(dialog, final.cseq().seq);
        dialog.answered = true;
        dialog.settleAnswered();
      },
      (error: Error) => this.dialogs.get(callId)?.settleEnded(error.message),
    );
    return leg.leg;
  }

  /** The next incoming call (autoAnswer must be on). */
  nextIncomingCall(timeoutMs = 30_000, from = 0): Promise<CallLeg> {
    return this.incoming.waitFor(() => true, timeoutMs, from, `incoming call for ${this.options.user}`);
  }

  get incomingCalls(): readonly CallLeg[] {
    return this.incoming.all;
  }

  /** Unsubscribes, unregisters (when registered), closes the sockets. Never throws. */
  async close(): Promise<void> {
    if (this.closed) return;
    const quiet = async (work: () => Promise<unknown>) => {
      try {
        await work();
      } catch {
        // best effort: the server may be gone already
      }
    };
    for (const dialog of [...this.dialogs.values()]) if (!dialog.ended) await quiet(() => this.hangupDialog(dialog));
    for (const subscription of this.subscriptions.values()) await quiet(() => this.refreshSubscription(subscription, 0));
    if (this.registeredExpires > 0) await quiet(() => this.register(0));
    this.closed = true;
    for (const transaction of this.transactions.values()) this.finish(transaction, null);
    this.socket.close();
    this.rtp.close();
  }

  // ------------------------------------------------------------------ transactions

  private expectSuccess(response: SipMessage, what: string): void {
    if (response.status < 200 || response.status >= 300) throw new SipError(`${what}: ${response.status} ${response.reason}`, response.status);
  }

  /** Sends a request with retransmissions, answers one digest challenge, resolves with the final response. */
  private async request(spec: RequestSpec): Promise<SipMessage> {
    let authorization: string | undefined;
    for (let attempt = 0; attempt < 2; attempt++) {
      const seq = ++this.cseq;
      const branch = `z9hG4bK${token()}`;
      const headers = [...(spec.headers ?? []), ...(authorization ? [authorization] : [])];
      const text = this.build(spec.method, spec.uri, spec.from, spec.to, spec.callId, seq, branch, headers, spec.body, spec.contentType);
      const destination = spec.destination ?? this.options.server;
      if (spec.method === 'INVITE') {
        const dialog = this.dialogs.get(spec.callId);
        if (dialog) dialog.pendingInvite = { uri: spec.uri, from: spec.from, to: spec.to, seq, branch, destination };
      }
      const response = await this.transact(text, branch, spec.method, destination, spec.timeoutMs ?? this.options.transactionTimeoutMs ?? 10_000, spec.onProvisional);
      if (response === null) throw new SipError(`${spec.method} ${spec.uri}: no final response`);
      if (spec.method === 'INVITE' && response.status >= 300) this.ackFailure(response, spec.uri, spec.from, spec.callId, branch, destination);
      if ((response.status === 401 || response.status === 407) && attempt === 0) {
        const challenge = parseChallenge(response.get(response.status === 401 ? 'www-authenticate' : 'proxy-authenticate') ?? '');
        authorization = `${response.status === 401 ? 'Authorization' : 'Proxy-Authorization'}: ${this.digest(challenge, spec.method, spec.uri)}`;
        continue;
      }
      return response;
    }
    throw new SipError(`${spec.method} ${spec.uri}: challenged again (credentials rejected)`);
  }

  private transact(text: string, branch: string, method: string, destination: SipServer, timeoutMs: number, onProvisional?: (m: SipMessage) => void): Promise<SipMessage | null> {
    return new Promise((resolve) => {
      const transaction: Transaction = {
        branch,
        method,
        resolve,
        onProvisional,
        retransmit: null,
        provisional: false,
        deadline: setTimeout(() => this.finish(transaction, null), timeoutMs),
      };
      this.transactions.set(branch, transaction);
      let interval = 500;
      const send = () => {
        this.send(text, destination);
        if (method === 'INVITE' && transaction.provisional) return;
        transaction.retransmit = setTimeout(send, interval);
        interval = method === 'INVITE' ? interval * 2 : Math.min(interval * 2, 4_000);
      };
      send();
    });
  }

  private finish(transaction: Transaction, message: SipMessage | null): void {
    if (transaction.retransmit) clearTimeout(transaction.retransmit);
    clearTimeout(transaction.deadline);
    this.transactions.delete(transaction.branch);
    transaction.resolve(message);
  }

  private digest(challenge: Record<string, string>, method: string, uri: string): string {
    const realm = challenge.realm ?? this.options.domain;
    const nonce = challenge.nonce ?? '';
    const ha1 = md5(`${this.options.user}:${realm}:${this.options.password}`);
    const ha2 = md5(`${method}:${uri}`);
    const parts = [`username="${this.options.user}"`, `realm="${realm}"`, `nonce="${nonce}"`, `uri="${uri}"`];
    const qops = (challenge.qop ?? '').split(',').map((q) => q.trim());
    let response: string;
    if (qops.includes('auth')) {
      const cnonce = token(8);
      response = md5(`${ha1}:${nonce}:00000001:${cnonce}:auth:${ha2}`);
      parts.push('qop=auth', 'nc=00000001', `cnonce="${cnonce}"`);
    } else {
      response = md5(`${ha1}:${nonce}:${ha2}`);
    }
    parts.push(`response="${response}"`, 'algorithm=MD5');
    if (challenge.opaque !== undefined) parts.push(`opaque="${challenge.opaque}"`);
    return `Digest ${parts.join(', ')}`;
  }

  private build(method: string, uri: string, from: string, to: string, callId: string, seq: number, branch: string, headers: string[], body = '', contentType?: string): string {
    const lines = [
      `${method} ${uri} SIP/2.0`,
      `Via: SIP/2.0/UDP ${this.options.localIp}:${this.localPort};branch=${branch};rport`,
      'Max-Forwards: 70',
      `From: ${from}`,
      `To: ${to}`,
      `Call-ID: ${callId}`,
      `CSeq: ${seq} ${method}`,
      'User-Agent: fsb-test-ua',
      ...headers,
    ];
    if (body) lines.push(`Content-Type: ${contentType ?? 'application/sdp'}`);
    lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
    return lines.join('\r\n') + '\r\n\r\n' + body;
  }

  private send(text: string, destination: SipServer): void {
    if (this.closed) return;
    this.socket.send(text, destination.port, destination.host);
  }

  private ackFailure(response: SipMessage, uri: string, from: string, callId: string, branch: string, destination: SipServer): void {
    const lines = [
      `ACK ${uri} SIP/2.0`,
      `Via: SIP/2.0/UDP ${this.options.localIp}:${this.localPort};branch=${branch};rport`,
      'Max-Forwards: 70',
      `From: ${from}`,
      `To: ${response.get('to') ?? ''}`,
      `Call-ID: ${callId}`,
      `CSeq: ${response.cseq().seq} ACK`,
      'Content-Length: 0',
    ];
    this.send(lines.join('\r\n') + '\r\n\r\n', destination);
  }

  private sendAck(dialog: Dialog, seq: number): void {
    const text = this.build('ACK', dialog.remoteTarget, `<${dialog.localUri}>;tag=${dialog.localTag}`, dialog.remoteNameAddr, dialog.callId, seq, `z9hG4bK${token()}`, []);
    dialog.lastResponse = text;
    this.send(text, dialog.destination);
  }

  // ------------------------------------------------------------------ dialogs (calls)

  private newDialog(fields: Omit<Dialog, 'settleAnswered' | 'settleEnded'>): { dialog: Dialog; leg: CallLeg } {
    let settleAnswered!: () => void;
    let rejectAnswered!: (error: Error) => void;
    let settleEnded!: (why: string) => void;
    const answered = new Promise<void>((resolve, reject) => {
      settleAnswered = resolve;
      rejectAnswered = reject;
    });
    answered.catch(() => undefined);
    const ended = new Promise<string>((resolve) => (settleEnded = resolve));
    const dialog: Dialog = {
      ...fields,
      settleAnswered,
      settleEnded: (why) => {
        if (dialog.ended) return;
        dialog.ended = true;
        this.dialogs.delete(dialog.callId);
        if (!dialog.answered) rejectAnswered(new SipError(`call ended before answer: ${why}`));
        settleEnded(why);
      },
    };
    this.dialogs.set(fields.callId, dialog);
    const leg: CallLeg = { callId: fields.callId, answered, ended, hangup: () => this.hangupDialog(dialog) };
    return { dialog, leg };
  }

  private async hangupDialog(dialog: Dialog): Promise<void> {
    if (dialog.ended) return;
    if (!dialog.answered) {
      const pending = dialog.pendingInvite;
      if (dialog.invite) {
        // We are ringing: refuse the call.
        this.respond(dialog.invite, 486, 'Busy Here', [], '', dialog.localTag);
        dialog.settleEnded('declined');
        return;
      }
      if (pending) {
        const lines = [
          `CANCEL ${pending.uri} SIP/2.0`,
          `Via: SIP/2.0/UDP ${this.options.localIp}:${this.localPort};branch=${pending.branch};rport`,
          'Max-Forwards: 70',
          `From: ${pending.from}`,
          `To: ${pending.to}`,
          `Call-ID: ${dialog.callId}`,
          `CSeq: ${pending.seq} CANCEL`,
          'Content-Length: 0',
        ];
        this.send(lines.join('\r\n') + '\r\n\r\n', pending.destination);
        await Promise.race([dialog.ended, new Promise((resolve) => setTimeout(resolve, 8_000))]);
        dialog.settleEnded('cancelled');
        return;
      }
    }
    const response = await this.request({
      method: 'BYE',
      uri: dialog.remoteTarget,
      from: `<${dialog.localUri}>;tag=${dialog.localTag}`,
      to: dialog.remoteNameAddr,
      callId: dialog.callId,
      destination: dialog.destination,
    });
    dialog.settleEnded(`BYE ${response.status}`);
  }

  // ------------------------------------------------------------------ incoming

  private onMessage(raw: Buffer, info: dgram.RemoteInfo): void {
    if (raw.length < 8) return; // keep-alives
    let message: SipMessage;
    try {
      message = new SipMessage(raw, { address: info.address, port: info.port });
    } catch {
      return;
    }
    if (!message.isRequest) {
      this.onResponse(message);
      return;
    }
    this.onRequest(message);
  }

  private onResponse(message: SipMessage): void {
    const branch = /branch=([^;,\s]+)/.exec(message.get('via') ?? '')?.[1];
    const transaction = branch ? this.transactions.get(branch) : undefined;
    if (!transaction) {
      // A retransmitted 2xx to our INVITE: ACK it again.
      if (message.method === 'INVITE' && message.status === 200) {
        const dialog = this.dialogs.get(message.get('call-id') ?? '');
        if (dialog?.lastResponse) this.send(dialog.lastResponse, dialog.destination);
      }
      return;
    }
    if (message.status < 200) {
      if (transaction.method === 'INVITE') {
        transaction.provisional = true;
        if (transaction.retransmit) clearTimeout(transaction.retransmit);
        transaction.retransmit = null;
      }
      transaction.onProvisional?.(message);
      return;
    }
    this.finish(transaction, message);
  }

  private onRequest(message: SipMessage): void {
    const callId = message.get('call-id') ?? '';
    switch (message.method) {
      case 'NOTIFY': {
        this.respond(message, 200, 'OK');
        const notify: Notify = {
          at: Date.now(),
          source: `${message.source.address}:${message.source.port}`,
          event: message.get('event') ?? '',
          subscriptionState: message.get('subscription-state') ?? '',
          contentType: message.get('content-type') ?? '',
          body: message.body,
          ...parseNotifyBody(message.body),
        };
        const subscription = this.subscriptions.get(callId);
        if (!subscription) {
          if (this.unsolicited.length < 1_000) this.unsolicited.push(notify);
          return;
        }
        if (!subscription.toHeader.includes(';tag=')) subscription.toHeader = message.get('from') ?? subscription.toHeader;
        subscription.deliver(notify);
        return;
      }
      case 'OPTIONS':
        this.respond(message, 200, 'OK', ['Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, MESSAGE']);
        return;
      case 'INVITE':
        this.onInvite(message);
        return;
      case 'ACK': {
        const dialog = this.dialogs.get(callId);
        if (dialog) dialog.acked = true;
        return;
      }
      case 'BYE':
        this.respond(message, 200, 'OK');
        this.dialogs.get(callId)?.settleEnded('remote BYE');
        return;
      case 'CANCEL': {
        this.respond(message, 200, 'OK');
        const dialog = this.dialogs.get(callId);
        if (dialog?.invite && !dialog.answered) {
          this.respond(dialog.invite, 487, 'Request Terminated', [], '', dialog.localTag);
          dialog.settleEnded('remote CANCEL');
        }
        return;
      }
      case 'MESSAGE':
        this.respond(message, 200, 'OK');
        return;
      default:
        this.respond(message, 405, 'Method Not Allowed');
    }
  }

  private onInvite(message: SipMessage): void {
    const callId = message.get('call-id') ?? '';
    const existing = this.dialogs.get(callId);
    if (existing) {
      // A retransmission, or a re-INVITE within the call: answer it the same way.
      if (message.tag('to') && existing.answered) this.respond(message, 200, 'OK', [`Contact: ${this.contact}`], this.sdp(), existing.localTag);
      else if (existing.lastResponse && existing.invite) this.send(existing.lastResponse, { host: existing.invite.source.address, port: existing.invite.source.port });
      return;
    }
    this.lastInviteFrom = `${message.source.address}:${message.source.port}`;
    const autoAnswer = this.options.autoAnswer;
    if (!autoAnswer) {
      this.respond(message, 486, 'Busy Here', [], '', token(4));
      return;
    }
    const localTag = token(4);
    const remoteTarget = uriOf(message.get('contact') ?? '');
    const { dialog, leg } = this.newDialog({
      callId,
      localTag,
      localUri: uriOf(message.get('to') ?? ''),
      remoteNameAddr: message.get('from') ?? '',
      remoteTarget,
      destination: hostPortOf(remoteTarget) ?? { host: message.source.address, port: message.source.port },
      answered: false,
      ended: false,
      invite: message,
    });
    this.respond(message, 100, 'Trying');
    dialog.lastResponse = this.respond(message, 180, 'Ringing', [`Contact: ${this.contact}`], '', localTag);
    this.incoming.push(leg);
    setTimeout(() => {
      if (dialog.ended) return;
      dialog.answered = true;
      dialog.lastResponse = this.respond(message, 200, 'OK', [`Contact: ${this.contact}`, 'Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY'], this.sdp(), localTag);
      dialog.settleAnswered();
      let interval = 500;
      const resend = () => {
        if (dialog.acked || dialog.ended || this.closed) return;
        if (dialog.lastResponse) this.send(dialog.lastResponse, { host: message.source.address, port: message.source.port });
        interval = Math.min(interval * 2, 4_000);
        setTimeout(resend, interval).unref();
      };
      setTimeout(resend, interval).unref();
    }, autoAnswer.ringMs).unref();
  }

  /** Builds and sends a response to `request`; returns its text (to resend). */
  private respond(request: SipMessage, status: number, reason: string, headers: string[] = [], body = '', toTag?: string): string {
    let to = request.get('to') ?? '';
    if (toTag && !to.includes(';tag=')) to += `;tag=${toTag}`;
    const lines = [`SIP/2.0 ${status} ${reason}`, ...request.getAll('via').map((v) => `Via: ${v}`), `From: ${request.get('from') ?? ''}`, `To: ${to}`, `Call-ID: ${request.get('call-id') ?? ''}`, `CSeq: ${request.get('cseq') ?? ''}`, 'User-Agent: fsb-test-ua', ...headers];
    if (body) lines.push('Content-Type: application/sdp');
    lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
    const text = lines.join('\r\n') + '\r\n\r\n' + body;
    this.send(text, { host: request.source.address, port: request.source.port });
    return text;
  }

  private sdp(): string {
    const session = String(Math.floor(Math.random() * 900_000) + 100_000);
    const ip = this.options.localIp;
    return [
      'v=0',
      `o=fsb ${session} ${session} IN IP4 ${ip}`,
      's=fsb',
      `c=IN IP4 ${ip}`,
      't=0 0',
      `m=audio ${this.rtp.address().port} RTP/AVP 0 8 101`,
      'a=rtpmap:0 PCMU/8000',
      'a=rtpmap:8 PCMA/8000',
      'a=rtpmap:101 telephone-event/8000',
      'a=fmtp:101 0-16',
      'a=ptime:20',
      'a=sendrecv',
      '',
    ].join('\r\n');
  }
}
