import pino, { type Logger } from 'pino';

export type { Logger };

/** JSON logs to stdout; pretty when stdout is a terminal (pino-pretty as a transport so it stays off the hot path). */
export function createLogger(level = 'info', options: { pretty?: boolean; destination?: number } = {}): Logger {
  const pretty = options.pretty ?? Boolean(process.stdout.isTTY);
  if (pretty) {
    return pino({ level, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', destination: options.destination ?? 1 } } });
  }
  return pino({ level }, pino.destination({ dest: options.destination ?? 1, sync: false }));
}

/** A logger that drops everything, for tests and library use without logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
