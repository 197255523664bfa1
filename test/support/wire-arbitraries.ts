import fc from 'fast-check';
import { FsEvent } from '../../bridge/event/event.js';

/**
 * Text a hostile or broken peer can put in a header: any code point, lone surrogate
 * halves (only a JSON event can carry them, as `\ud800`), NUL, CR/LF, the characters
 * the encoders treat specially, and 64 KB values.
 */
const codeUnit = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)) },
  { weight: 3, arbitrary: fc.constantFrom('\0', '\r', '\n', '\r\n', '%', '%0', '%ZZ', '%41', '/', ':', ': ', ' ', "'", '\\', '=', '.', '*', '>', '_undef_', '"', '\u007f', '\ufffd') },
);

const KB64 = 64 * 1024;
export const HUGE_VALUES = ['x'.repeat(KB64), '\ud800'.repeat(KB64), '\0'.repeat(KB64), '\r\n'.repeat(KB64 / 2), '\u00e9'.repeat(KB64 / 2), '%'.repeat(KB64)];

export const wireText: fc.Arbitrary<string> = fc.oneof(
  { weight: 20, arbitrary: fc.string({ unit: codeUnit, maxLength: 24 }) },
  { weight: 1, arbitrary: fc.constantFrom(...HUGE_VALUES) },
);

/** Nodes the scenarios talk about: ours (`fs-b` / `node-b`), two peers, and whatever a forger claims. */
export const NODES = [
  { name: 'fs-a', hostname: 'node-a', ipv4: '10.99.0.1' },
  { name: 'fs-b', hostname: 'node-b', ipv4: '10.99.0.2' },
  { name: 'fs-c', hostname: 'node-c', ipv4: '10.99.0.3' },
] as const;

const nowUs = () => Date.now() * 1000;
/** Header values that make events meaningful to the consumers, next to arbitrary text. */
const plausibleValue = fc.oneof(
  fc.constantFrom('Registered(UDP)', 'Registered(TLS-NAT)', '300', '1', '0', '-5', 'NaN', '1e400', 'CS_ROUTING', 'CS_HANGUP', 'answered', 'early', 'ringing', '1000', '1001', '127.0.0.1', 'realm'),
  fc.constantFrom(...NODES.flatMap((n) => [n.name, n.hostname, n.ipv4])),
  fc.constantFrom('4102444800000000', '0', '99999999999999999999'),
);

const HEADER_NAMES = [
  'from-user', 'from-host', 'user', 'host', 'status', 'expires', 'FreeSWITCH-Hostname', 'FreeSWITCH-Switchname', 'FreeSWITCH-IPv4',
  'Event-Date-Timestamp', 'Multicast-Sender', 'Peer', 'from', 'login', 'Unique-ID', 'Answer-State', 'Presence-Call-Direction', 'rpid',
  'Core-UUID', 'Event-Sequence', 'FSB-Injected-By', 'Content-Length', 'Event-Name', 'Event-Subclass',
];

export const header: fc.Arbitrary<[string, string]> = fc.tuple(
  fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...HEADER_NAMES) }, { weight: 1, arbitrary: wireText }),
  fc.oneof({ weight: 2, arbitrary: plausibleValue }, { weight: 2, arbitrary: wireText }),
);

/** Values for one header: usually what a real node sends there, sometimes anything. */
function valueOf(plausible: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.oneof({ weight: 3, arbitrary: plausible }, { weight: 1, arbitrary: wireText });
}

const user = fc.constantFrom('1000', '1001', '1002');
const realm = fc.constantFrom('127.0.0.1', 'example.com');
const nodeName = fc.constantFrom(...NODES.map((n) => n.name));
const timestamp = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: -120_000_000, max: 5_000_000 }).map((delta) => String(nowUs() + delta)) },
  { weight: 1, arbitrary: fc.constantFrom('4102444800000000', '0', '-1', '99999999999999999999', 'soon') },
);

/** The headers each kind of event needs to mean something to the bridge and the consumers. */
const MEANINGFUL: Record<string, fc.Arbitrary<[string, string][]>> = {
  'sofia::register': fc.tuple(valueOf(fc.constantFrom('Registered(UDP)', 'Registered(WSS-NAT)', 'Registration failed')), valueOf(user), valueOf(realm), valueOf(fc.constantFrom('1', '300', '0', '-5', '1e400'))).map(([status, u, r, expires]) => [
    ['status', status], ['from-user', u], ['from-host', r], ['expires', expires],
  ]),
  'sofia::unregister': fc.tuple(valueOf(user), valueOf(realm)).map(([u, r]) => [['from-user', u], ['from-host', r], ['expires', '0']]),
  'sofia::expire': fc.tuple(valueOf(user), valueOf(realm)).map(([u, r]) => [['user', u], ['host', r], ['expires', String(Math.floor(Date.now() / 1000))]]),
  'multicast::peerdown': valueOf(nodeName).map((peer) => [['Peer', peer]]),
  'multicast::peerup': valueOf(nodeName).map((peer) => [['Peer', peer]]),
  'multicast::event': fc.tuple(valueOf(fc.constantFrom('sofia::register', 'PRESENCE_IN')), valueOf(nodeName), valueOf(user)).map(([inner, from, u]) => [
    ['Orig-Event-Name', inner === 'PRESENCE_IN' ? inner : 'CUSTOM'], ['Orig-Event-Subclass', inner], ['Orig-Multicast-Sender', from], ['Orig-from-user', u], ['Orig-Core-UUID', 'core-9'], ['Orig-Event-Sequence', '7'],
  ]),
  PRESENCE_IN: fc
    .tuple(valueOf(user), valueOf(fc.constantFrom('call-1', 'call-2')), valueOf(fc.constantFrom('CS_ROUTING', 'CS_EXECUTE', 'answered', 'CS_HANGUP')), valueOf(fc.constantFrom('early', 'confirmed', 'terminated', 'ringing')))
    .map(([u, call, status, answer]) => [['from', u], ['Unique-ID', call], ['status', status], ['Answer-State', answer], ['Presence-Call-Direction', 'inbound']]),
  HEARTBEAT: fc.constant([]),
};

const KINDS: [string, string | undefined][] = [
  ['CUSTOM', 'sofia::register'],
  ['CUSTOM', 'sofia::register'],
  ['CUSTOM', 'sofia::unregister'],
  ['CUSTOM', 'sofia::expire'],
  ['CUSTOM', 'multicast::peerdown'],
  ['CUSTOM', 'multicast::peerup'],
  ['CUSTOM', 'multicast::event'],
  ['PRESENCE_IN', undefined],
  ['PRESENCE_IN', undefined],
  ['HEARTBEAT', undefined],
];

export interface WireEvent {
  event: FsEvent;
  /** The node the event claims to come from (a forger may claim ours). */
  sender: string;
}

const kind = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...KINDS) }, { weight: 1, arbitrary: fc.tuple(wireText, fc.option(wireText, { nil: undefined })) });

/**
 * An event as some node fired it: a known kind with the headers that make it mean
 * something (values mostly plausible, sometimes anything) or an arbitrary name, the
 * identity headers FreeSWITCH adds (often, not always, possibly lying), then
 * arbitrary headers and maybe a body.
 */
export const wireEvent: fc.Arbitrary<WireEvent> = kind.chain((k) =>
  fc
    .record({
      // hasOwn: an arbitrary event name can be `constructor` or `__proto__`, which a plain lookup finds on Object.prototype.
      meaningful: Object.hasOwn(MEANINGFUL, k[1] ?? k[0]) ? MEANINGFUL[k[1] ?? k[0]] : fc.constant([]),
      node: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...NODES) }, { weight: 1, arbitrary: fc.record({ name: wireText, hostname: wireText, ipv4: wireText }) }),
      identity: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      timestamp,
      core: fc.constantFrom('core-1', 'core-2', 'core-3'),
      seq: fc.integer({ min: 1, max: 1_000_000 }),
      headers: fc.array(header, { maxLength: 6 }),
      body: fc.option(wireText, { nil: null, freq: 4 }),
    })
    .map(({ meaningful, node, identity, timestamp: ts, core, seq, headers, body }) => {
      const event = FsEvent.create(k[0], k[1]);
      event.add('Core-UUID', core).add('Event-Sequence', String(seq));
      if (identity) {
        event.add('FreeSWITCH-Hostname', node.hostname).add('FreeSWITCH-Switchname', node.name).add('FreeSWITCH-IPv4', node.ipv4);
        event.add('Event-Date-Timestamp', ts);
      }
      for (const [name, value] of meaningful) event.add(name, value);
      for (const [name, value] of headers) event.add(name, value);
      event.body = body;
      return { event, sender: node.name };
    }),
);
