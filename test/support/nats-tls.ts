/**
 * Throwaway key material for NATS auth/TLS tests, made at test time so nothing
 * secret or expiring is committed: a CA with a server certificate (SAN 127.0.0.1,
 * localhost) and a client certificate, a second unrelated CA, NKey users, and an
 * operator/account/user chain of signed JWTs with a creds file.
 *
 * Certificates come from the `openssl` CLI (.ci/setup installs it): Node can
 * make keys but has no API to issue X.509 certificates.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAccount, createOperator, createUser, defaultNatsLimits, encodeAccount, encodeOperator, encodeUser, fmtCreds } from '@nats-io/jwt';

export interface TestPki {
  readonly dir: string;
  readonly caFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
  /** A CA that signed none of the above. */
  readonly otherCaFile: string;
  /** The PEM text of one of the files. */
  pem(file: string): string;
  dispose(): void;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

// P-256 keys: generated in milliseconds, accepted by both Go (nats-server) and Node.
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function selfSignedCa(dir: string, name: string, commonName: string): void {
  openssl(dir, ['req', '-x509', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '1', '-subj', `/CN=${commonName}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
}

function issue(dir: string, name: string, commonName: string, extensions: string): void {
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(dir, ['req', '-new', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${commonName}`]);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-out', `${name}.pem`, '-extfile', `${name}.ext`]);
}

/** A fresh CA, server and client certificate, and an unrelated CA, in a temp dir. */
export function generateTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'fsb-pki-'));
  try {
    selfSignedCa(dir, 'ca', 'fsb test CA');
    selfSignedCa(dir, 'other-ca', 'fsb unrelated CA');
    issue(dir, 'server', 'localhost', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n');
    issue(dir, 'client', 'fsb-test-client', 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n');
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    serverCertFile: join(dir, 'server.pem'),
    serverKeyFile: join(dir, 'server.key'),
    clientCertFile: join(dir, 'client.pem'),
    clientKeyFile: join(dir, 'client.key'),
    otherCaFile: join(dir, 'other-ca.pem'),
    pem: (file) => readFileSync(file, 'utf8'),
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export interface TestNkeyUser {
  /** Public key (U...), what the server config lists. */
  readonly publicKey: string;
  /** Seed (SU...), what the bridge config holds. */
  readonly seed: string;
}

export function createNkeyUser(): TestNkeyUser {
  const kp = createUser();
  return { publicKey: kp.getPublicKey(), seed: new TextDecoder().decode(kp.getSeed()) };
}

/** What a nats-server in operator mode needs (NatsServerAuth), and a user's creds file content. */
export interface TestOperator {
  readonly operatorJwt: string;
  readonly systemAccount: string;
  /** Account JWTs by account public key: the system account and the bridge's account. */
  readonly accounts: Record<string, string>;
  /** The text of a `.creds` file (user JWT and seed) for a user of the bridge's account. */
  readonly creds: string;
}

/** Operator -> system account and an account with JetStream (no limits) -> user, each JWT signed by its issuer. */
export async function createTestOperator(): Promise<TestOperator> {
  const operator = createOperator();
  const system = createAccount();
  const account = createAccount();
  const user = createUser();
  const operatorJwt = await encodeOperator('fsb-test-operator', operator, { system_account: system.getPublicKey() });
  // Limits given in an account JWT replace the defaults (0 = nothing allowed), so each one is spelled out.
  const unlimited = { ...defaultNatsLimits(), conn: -1, leaf: -1, imports: -1, exports: -1, wildcards: true, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };
  const userJwt = await encodeUser('fsb-bridge', user, account);
  return {
    operatorJwt,
    systemAccount: system.getPublicKey(),
    accounts: {
      [system.getPublicKey()]: await encodeAccount('SYS', system, {}, { signer: operator }),
      [account.getPublicKey()]: await encodeAccount('FSB', account, { limits: unlimited }, { signer: operator }),
    },
    creds: new TextDecoder().decode(fmtCreds(userJwt, user)),
  };
}
