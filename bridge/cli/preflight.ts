import { networkInterfaces } from 'node:os';
import { FORMATS } from '../config/schema.js';
import type { BridgeConfig } from '../config/types.js';
import { ConfigError } from '../errors.js';
import { connectionOptions } from '../transports/nats/connection.js';

/**
 * What only the host can tell about a config that loadConfig accepted: addresses the
 * sockets would bind or join on that this host does not have, and NATS credential and
 * TLS files it cannot read (checked by the very code that later connects). `run` fails
 * on the first with FSB_ERR_CONFIG before opening anything; `validate` prints them as
 * warnings, since a config is often checked on another machine than the one it is for.
 * What no check can see in advance (a port in use) fails `run` as FSB_ERR_BIND.
 */
export function hostProblems(config: BridgeConfig): ConfigError[] {
  const problems: ConfigError[] = [];
  const local = localAddresses();
  const notLocal = (param: string, address: string) =>
    problems.push(new ConfigError(config.file, param, `${address} is not an address of this host (it has ${[...local].sort().join(', ')})`));
  if (config.multicast.enabled) {
    if (config.multicast.interface !== '' && !local.has(config.multicast.interface)) notLocal('interface', config.multicast.interface);
    const bind = config.multicast.bindAddress;
    if (bind !== '0.0.0.0' && FORMATS['multicast-group'].check(bind) !== undefined && !local.has(bind)) notLocal('bind-address', bind);
  }
  if (config.nats.enabled) {
    try {
      connectionOptions(config.nats);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(err);
    }
  }
  return problems;
}

function localAddresses(): Set<string> {
  const addresses = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const info of list ?? []) addresses.add(info.address);
  return addresses;
}
