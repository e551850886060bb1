import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

const LEVELS: readonly string[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** Structured logger for a component; level from AMBIT_LOG_LEVEL unless given. */
export function createLogger(component: string, level?: string): Logger {
  return pino({
    base: { component },
    level: level ?? process.env.AMBIT_LOG_LEVEL ?? 'info',
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}

/** Validates a level name given at runtime (admin `/logging?level=`). */
export function parseLevel(value: string): LevelWithSilent {
  if (!LEVELS.includes(value)) throw new Error(`unknown log level "${value}"; one of ${LEVELS.join(', ')}`);
  return value as LevelWithSilent;
}
