/**
 * The real-FreeSWITCH suite's SIP UA against a scripted server on loopback: digest
 * auth as FreeSWITCH challenges it, NOTIFY collection and parsing (bodies captured from
 * real 1.10.12 NOTIFYs), a call answered and hung up both ways.
 */
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { SipMessage, SipUa, parseNotifyBody } from '../support/sip-ua.js';
import { until } from '../support/wait.js';

const md5 = (s: string) => createHash('md5').update(s).digest('hex');

/** Bodies as FreeSWITCH 1.10.12 sent them (lab capture, one call 1000 -> 1001). */
const DIALOG_CONFIRMED = `<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="2" state="full" entity="sip:1000@127.0.0.1">
<dialog id="cf2dc038-af1f-4bfb-b2dc-d7a603f268fb" direction="initiator">
<state>confirmed</state>
<local>
<identity display="1000">sip:1000@127.0.0.1</identity>
<target uri="sip:1000@127.0.0.1">
<param pname="+sip.rendering" pvalue="yes"/>
</target>
</local>
<remote>
<identity display="1001">sip:1001@127.0.0.1</identity>
<target uri="sip:**1000@127.0.0.1"/>
</remote>
</dialog>
</dialog-info>
`;
const DIALOG_IDLE = `<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:1000@127.0.0.1">
</dialog-info>
`;
const PIDF_TALK = `<?xml version="1.0" encoding="ISO-8859-1"?> 
<presence xmlns='urn:ietf:params:xml:ns:pidf' 
xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model' 
xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid' 
xmlns:c='urn:ietf:params:xml:ns:pidf:cipid' entity='sip:1000@127.0.0.1'>
 <tuple id='t6a5ed77e'>
  <status>
   <basic>open</basic>
  </status>
 </tuple>
 <dm:person id='p06360c4a'>
  <rpid:activities>
   <rpid:on-the-phone/>
  </rpid:activities>
  <dm:note>Talk 1001</dm:note>
 </dm:person>
</presence>`;

describe('NOTIFY bodies', () => {
  it('reads dialog state and direction, pidf note and basic status, message-summary', () => {
    expect(parseNotifyBody(DIALOG_CONFIRMED).dialogs).toEqual([{ id: 'cf2dc038-af1f-4bfb-b2dc-d7a603f268fb', state: 'confirmed', direction: 'initiator' }]);
    expect(parseNotifyBody(DIALOG_IDLE).dialogs).toEqual([]);
    expect(parseNotifyBody(PIDF_TALK)).toMatchObject({ note: 'Talk 1001', basic: 'open' });
    expect(parseNotifyBody('Messages-Waiting: yes\r\nMessage-Account: sip:1000@127.0.0.1\r\nVoice-Message: 2/0 (0/0)\r\n')).toMatchObject({ messagesWaiting: true, voiceMessage: '2/0 (0/0)' });
  });
});

/** A registrar/notifier that challenges every first request like FreeSWITCH (401 REGISTER, 407 others). */
class ScriptedServer {
  readonly socket = dgram.createSocket('udp4');
  readonly requests: SipMessage[] = [];
  readonly nonce = 'n' + Math.random().toString(16).slice(2);
  onRequest: (request: SipMessage) => void = () => undefined;

  async listen(): Promise<number> {
    this.socket.on('message', (raw, info) => {
      const message = new SipMessage(raw, { address: info.address, port: info.port });
      if (!message.isRequest) return;
      this.requests.push(message);
      this.onRequest(message);
    });
    await new Promise<void>((resolve) => this.socket.bind(0, '127.0.0.1', resolve));
    return this.socket.address().port;
  }

  respond(request: SipMessage, status: number, reason: string, extra: string[] = [], body = ''): void {
    const lines = [`SIP/2.0 ${status} ${reason}`, ...request.getAll('via').map((v) => `Via: ${v}`), `From: ${request.get('from')}`, `To: ${request.get('to')}${status > 100 && !request.get('to')!.includes('tag=') ? ';tag=srv' : ''}`, `Call-ID: ${request.get('call-id')}`, `CSeq: ${request.get('cseq')}`, ...extra, `Content-Length: ${Buffer.byteLength(body)}`];
    this.socket.send(lines.join('\r\n') + '\r\n\r\n' + body, request.source.port, request.source.address);
  }

  request(to: { address: string; port: number }, text: string): void {
    this.socket.send(text, to.port, to.address);
  }

  /** Checks a digest response the way FreeSWITCH does (MD5, qop=auth). */
  validDigest(request: SipMessage, password: string): boolean {
    const header = request.get('authorization') ?? request.get('proxy-authorization') ?? '';
    const field = (name: string) => new RegExp(`${name}="?([^",]+)"?`).exec(header)?.[1] ?? '';
    const ha1 = md5(`${field('username')}:${field('realm')}:${password}`);
    const ha2 = md5(`${request.method}:${field('uri')}`);
    return field('response') === md5(`${ha1}:${field('nonce')}:${field('nc')}:${field('cnonce')}:auth:${ha2}`) && field('nonce') === this.nonce;
  }

  close(): void {
    this.socket.close();
  }
}

let server: ScriptedServer | null = null;
let ua: SipUa | null = null;

afterEach(async () => {
  await ua?.close();
  ua = null;
  server?.close();
  server = null;
});

async function start(password = '1234'): Promise<{ server: ScriptedServer; ua: SipUa }> {
  server = new ScriptedServer();
  const port = await server.listen();
  const s = server;
  s.onRequest = (request) => {
    if (request.method === 'ACK') return;
    const authorized = request.get('authorization') ?? request.get('proxy-authorization');
    if (!authorized) {
      const challenge = `Digest realm="127.0.0.1", nonce="${s.nonce}", algorithm=MD5, qop="auth"`;
      if (request.method === 'REGISTER') s.respond(request, 401, 'Unauthorized', [`WWW-Authenticate: ${challenge}`]);
      else s.respond(request, 407, 'Proxy Authentication Required', [`Proxy-Authenticate: ${challenge}`]);
      return;
    }
    if (!s.validDigest(request, '1234')) {
      s.respond(request, 403, 'Forbidden');
      return;
    }
    if (request.method === 'REGISTER') s.respond(request, 200, 'OK', [`Contact: ${request.get('contact')}`]);
    else if (request.method === 'SUBSCRIBE') s.respond(request, 202, 'Accepted', ['Expires: 600']);
    else if (request.method === 'INVITE') {
      s.respond(request, 100, 'Trying');
      s.respond(request, 180, 'Ringing');
      s.respond(request, 200, 'OK', [`Contact: <sip:1001@127.0.0.1:${port}>`], 'v=0\r\n');
    } else s.respond(request, 200, 'OK');
  };
  ua = await SipUa.open({ user: '1000', password, domain: '127.0.0.1', localIp: '127.0.0.1', server: { host: '127.0.0.1', port }, autoAnswer: { ringMs: 50 } });
  return { server, ua };
}

describe('SipUa', () => {
  it('registers with digest auth (401, then qop=auth MD5), and unregisters on close', async () => {
    const { server, ua } = await start();
    expect(await ua.register(120)).toBe(120);
    const [challenged, authorized] = server.requests;
    expect(challenged.method).toBe('REGISTER');
    expect(challenged.get('authorization')).toBeUndefined();
    expect(server.validDigest(authorized, '1234')).toBe(true);
    await ua.close();
    const last = server.requests.at(-1)!;
    expect(last.method).toBe('REGISTER');
    expect(last.get('expires')).toBe('0');
  });

  it('gives up with the status when the password is wrong', async () => {
    const { ua } = await start('wrong');
    await expect(ua.register(120)).rejects.toThrow(/403/);
  });

  it('collects the NOTIFYs of a subscription, parsed, in order, and answers them 200', async () => {
    const { server, ua } = await start();
    const subscription = await ua.subscribe('1001', 'dialog');
    const subscribe = server.requests.at(-1)!;
    expect(subscribe.get('event')).toBe('dialog');
    const phone = { address: '127.0.0.1', port: ua.localPort };
    const notify = (body: string, cseq: number) =>
      [`NOTIFY sip:1000@127.0.0.1 SIP/2.0`, 'Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsrv' + cseq, `From: ${subscribe.get('to')};tag=srv`, `To: ${subscribe.get('from')}`, `Call-ID: ${subscribe.get('call-id')}`, `CSeq: ${cseq} NOTIFY`, 'Event: dialog', 'Subscription-State: active;expires=599', 'Content-Type: application/dialog-info+xml', `Content-Length: ${Buffer.byteLength(body)}`, '', body].join('\r\n');
    const answers: SipMessage[] = [];
    server.socket.on('message', (raw, info) => {
      const m = new SipMessage(raw, { address: info.address, port: info.port });
      if (!m.isRequest) answers.push(m);
    });
    server.request(phone, notify(DIALOG_IDLE, 1));
    server.request(phone, notify(DIALOG_CONFIRMED, 2));
    const confirmed = await subscription.waitFor((n) => n.dialogs.some((d) => d.state === 'confirmed'));
    expect(confirmed.dialogs[0].direction).toBe('initiator');
    expect(subscription.received.map((n) => n.dialogs.length)).toEqual([0, 1]);
    await until(() => answers.length === 2);
    expect(answers.map((a) => a.status)).toEqual([200, 200]);
  });

  it('places a call (407, 100/180/200, ACK) and hangs up with BYE', async () => {
    const { server, ua } = await start();
    const call = await ua.call('1001');
    await call.answered;
    await until(() => server.requests.some((r) => r.method === 'ACK'));
    await call.hangup();
    expect(await call.ended).toMatch(/BYE 200/);
    // The 407 is ACKed in its transaction, the 200 by a new one to the callee's Contact; BYE once, authorized after its own 407.
    expect(server.requests.map((r) => r.method)).toEqual(['INVITE', 'ACK', 'INVITE', 'ACK', 'BYE', 'BYE']);
    expect(server.validDigest(server.requests[2], '1234')).toBe(true);
  });

  it('answers an incoming call after ringing, and sees the caller hang up', async () => {
    const { server, ua } = await start();
    const phone = { address: '127.0.0.1', port: ua.localPort };
    const responses: SipMessage[] = [];
    server.socket.on('message', (raw, info) => {
      const m = new SipMessage(raw, { address: info.address, port: info.port });
      if (!m.isRequest) responses.push(m);
    });
    const headers = ['Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKin1', 'From: <sip:1002@127.0.0.1>;tag=caller', 'To: <sip:1000@127.0.0.1>', 'Call-ID: in-1', 'Contact: <sip:1002@127.0.0.1:5060>'];
    server.request(phone, ['INVITE sip:1000@127.0.0.1 SIP/2.0', ...headers, 'CSeq: 1 INVITE', 'Content-Length: 0', '', ''].join('\r\n'));
    const leg = await ua.nextIncomingCall(5_000);
    await leg.answered;
    await until(() => responses.some((r) => r.status === 200));
    expect(responses.map((r) => r.status).slice(0, 3)).toEqual([100, 180, 200]);
    const toTag = responses.find((r) => r.status === 200)!.tag('to');
    server.request(phone, ['ACK sip:1000@127.0.0.1 SIP/2.0', ...headers.map((h) => (h.startsWith('To:') ? `${h};tag=${toTag}` : h)), 'CSeq: 1 ACK', 'Content-Length: 0', '', ''].join('\r\n'));
    server.request(phone, ['BYE sip:1000@127.0.0.1 SIP/2.0', ...headers.map((h) => (h.startsWith('To:') ? `${h};tag=${toTag}` : h.replace('in1', 'in2'))), 'CSeq: 2 BYE', 'Content-Length: 0', '', ''].join('\r\n'));
    expect(await leg.ended).toBe('remote BYE');
  });
});
