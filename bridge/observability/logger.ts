import pino, { type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Secrets never reach a log line, whoever logs what: any field with one of these
 * names, at the top or one level down (a logged config section, an error's
 * fields), is replaced. The ESL auth command itself is redacted where errors are
 * built (commandForDisplay in errors.ts).
 */
const SECRET_FIELDS = ['password', 'pass', 'token', 'psk', 'nkeySeed', 'seed', 'credentials', 'authorization'];
export const LOG_REDACT: NonNullable<LoggerOptions['redact']> = {
  paths: SECRET_FIELDS.flatMap((field) => [field, `*.${field}`]),
  censor: '[redacted]',
};

/**
 * JSON logs to stdout; pretty when stdout is a terminal (pino-pretty as a transport so
 * it stays off the hot path). `stream` replaces the destination (tests read the lines).
 */
export function createLogger(level = 'info', options: { pretty?: boolean; destination?: number; stream?: DestinationStream } = {}): Logger {
  if (options.stream) return pino({ level, redact: LOG_REDACT }, options.stream);
  const pretty = options.pretty ?? Boolean(process.stdout.isTTY);
  if (pretty) {
    return pino({ level, redact: LOG_REDACT, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', destination: options.destination ?? 1 } } });
  }
  return pino({ level, redact: LOG_REDACT }, pino.destination({ dest: options.destination ?? 1, sync: false }));
}

/** A logger that drops everything, for tests and library use without logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
