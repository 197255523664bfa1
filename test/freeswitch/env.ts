/**
 * The two FreeSWITCH nodes the real-FreeSWITCH suite runs against, from environment
 * variables (docs/interop.md has the list and an example for a two-namespace lab).
 * Everything else (switchname, hostname, addresses, the db directory) is asked from
 * the nodes themselves over ESL, so the variables say only how to reach them.
 */

export interface HostPort {
  host: string;
  port: number;
}

export interface NodeEnv {
  /** `a` or `b`, as in the variable names. */
  key: 'a' | 'b';
  /** Where the suite (and the bridge, from the node's network) reaches the node's ESL. */
  esl: HostPort;
  eslPassword: string;
  /** The node's SIP profile (phones register there). */
  sip: HostPort;
  /** Command prefix that runs a process on the node's network, e.g. `ip netns exec labA`; empty: run it here. */
  exec: string[];
}

export interface LabEnv {
  domain: string;
  /** SIP password of the directory users the suite registers. */
  password: string;
  /** Directory users the suite may register (at least 12). */
  users: string[];
  /** Address the suite's SIP phones bind; the suite must run where it is configured. */
  phoneIp: string;
  a: NodeEnv;
  b: NodeEnv;
  multicast: HostPort;
  /** Set when the nodes' legacy mod_event_multicast uses a psk: every bridge then uses it too. */
  psk: string | null;
  /**
   * Set: the bridges talk secure multicast (AES-256-GCM, `<id>:<key>`) to each other, and
   * the legacy tests check instead that a legacy node and a secure bridge ignore each other.
   */
  secureKey: string | null;
  /** The node where mod_event_multicast may be loaded for the legacy tests (its event_multicast.conf.xml uses the same group and psk). */
  legacyNode: 'a' | 'b';
}

/** What each variable means, in the order the refusal lists them. */
export const LAB_VARIABLES: Record<string, string> = {
  FSB_FS_DOMAIN: 'SIP domain of the test users, e.g. 127.0.0.1',
  FSB_FS_PASSWORD: 'SIP password of the test users, e.g. 1234',
  FSB_FS_USERS: 'directory users the suite may register, a range such as 1000-1019 (at least 12)',
  FSB_FS_PHONE_IP: "address the suite's SIP phones bind (run the suite where that address lives), e.g. 10.99.0.3",
  FSB_FS_A_ESL: "node A's ESL as host:port, e.g. 10.99.0.1:8021",
  FSB_FS_A_ESL_PASSWORD: "node A's ESL password",
  FSB_FS_A_SIP: "node A's SIP profile as host:port, e.g. 10.99.0.1:5060",
  FSB_FS_A_EXEC: "command prefix that runs a process on node A's network, e.g. 'ip netns exec labA' (the word 'none' runs it here)",
  FSB_FS_B_ESL: "node B's ESL as host:port",
  FSB_FS_B_ESL_PASSWORD: "node B's ESL password",
  FSB_FS_B_SIP: "node B's SIP profile as host:port",
  FSB_FS_B_EXEC: "command prefix that runs a process on node B's network",
  FSB_FS_MULTICAST: 'multicast group the bridges use, group:port (the legacy node must be configured with it), e.g. 225.1.1.1:4242',
  FSB_FS_LEGACY_NODE: 'a or b: the node where the suite may load mod_event_multicast (configured for that group) for the legacy interop tests',
};

const OPTIONAL: Record<string, string> = {
  FSB_FS_PSK: 'psk of the legacy mod_event_multicast; when set, every bridge of the suite uses it too',
  FSB_FS_SECURE_KEY: "the bridges' multicast secure-key (<id>:<64 hex digits>), not with FSB_FS_PSK: bridges talk secure multicast, and the legacy node must ignore them",
};

export class LabEnvError extends Error {
  constructor(readonly problems: string[]) {
    super(
      [
        'npm run test:freeswitch needs two real FreeSWITCH nodes described by environment variables (see docs/interop.md):',
        ...problems.map((p) => `  - ${p}`),
        'Optional:',
        ...Object.entries(OPTIONAL).map(([name, what]) => `  ${name}: ${what}`),
      ].join('\n'),
    );
    this.name = 'LabEnvError';
  }
}

function hostPort(value: string): HostPort | null {
  const match = /^([^:\s]+):(\d{1,5})$/.exec(value.trim());
  if (!match) return null;
  const port = Number(match[2]);
  return port > 0 && port < 65536 ? { host: match[1], port } : null;
}

function userRange(value: string): string[] | null {
  const match = /^(\d+)-(\d+)$/.exec(value.trim());
  if (!match) return null;
  const first = Number(match[1]);
  const last = Number(match[2]);
  if (last < first) return null;
  return Array.from({ length: last - first + 1 }, (_, i) => String(first + i));
}

/** Reads and checks every variable; throws LabEnvError listing each missing or malformed one. */
export function loadLabEnv(env: NodeJS.ProcessEnv = process.env): LabEnv {
  const problems: string[] = [];
  const text = (name: string): string => {
    const value = env[name]?.trim();
    if (!value) {
      problems.push(`${name} is missing: ${LAB_VARIABLES[name]}`);
      return '';
    }
    return value;
  };
  const parsed = <T>(name: string, parse: (value: string) => T | null, fallback: T): T => {
    const value = text(name);
    if (!value) return fallback;
    const result = parse(value);
    if (result === null) {
      problems.push(`${name}=${JSON.stringify(value)} is not valid: ${LAB_VARIABLES[name]}`);
      return fallback;
    }
    return result;
  };
  const none: HostPort = { host: '', port: 0 };
  const node = (key: 'a' | 'b'): NodeEnv => {
    const prefix = `FSB_FS_${key.toUpperCase()}_`;
    const exec = text(`${prefix}EXEC`);
    return {
      key,
      esl: parsed(`${prefix}ESL`, hostPort, none),
      eslPassword: text(`${prefix}ESL_PASSWORD`),
      sip: parsed(`${prefix}SIP`, hostPort, none),
      exec: exec === 'none' ? [] : exec.split(/\s+/).filter(Boolean),
    };
  };
  const users = parsed('FSB_FS_USERS', (v) => {
    const range = userRange(v);
    return range && range.length >= 12 ? range : null;
  }, [] as string[]);
  const result: LabEnv = {
    domain: text('FSB_FS_DOMAIN'),
    password: text('FSB_FS_PASSWORD'),
    users,
    phoneIp: text('FSB_FS_PHONE_IP'),
    a: node('a'),
    b: node('b'),
    multicast: parsed('FSB_FS_MULTICAST', hostPort, none),
    psk: env.FSB_FS_PSK?.trim() || null,
    secureKey: env.FSB_FS_SECURE_KEY?.trim() || null,
    legacyNode: parsed('FSB_FS_LEGACY_NODE', (v) => (v === 'a' || v === 'b' ? v : null), 'a' as 'a' | 'b'),
  };
  if (result.psk && result.secureKey) problems.push('FSB_FS_PSK and FSB_FS_SECURE_KEY are both set: a bridge runs either the legacy psk or secure multicast');
  if (problems.length > 0) throw new LabEnvError(problems);
  return result;
}
