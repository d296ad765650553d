// Redis connections for several instances of one provider (INTERTALK_REDIS): one for commands
// and publishing, one in subscriber mode. ioredis reconnects by itself (a Redis restart is a
// pause, not a crash); errors are logged at most once per interval instead of once per retry.
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';

/** The URL without its password, for logs. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'redis://…';
  }
}

/** Reconnect after 100 ms, 200 ms, … up to 2 s between attempts, for ever. */
const retryStrategy = (times: number): number => Math.min(times * 100, 2000);

export function openRedis(url: string, logger: Logger, role: 'commands' | 'subscriber', extra: RedisOptions = {}): Redis {
  const redis = new Redis(url, {
    lazyConnect: true,
    retryStrategy,
    connectTimeout: 5000,
    connectionName: `intertalk-${role}`,
    // Commands: a request waits at most this long for Redis, then the caller falls back.
    ...(role === 'commands' ? { commandTimeout: 2000, maxRetriesPerRequest: 20 } : { maxRetriesPerRequest: null, autoResubscribe: true }),
    ...extra,
  });
  let lastLog = 0;
  let down = false;
  redis.on('error', (err: Error) => {
    const now = Date.now();
    if (now - lastLog < 10_000) return;
    lastLog = now;
    logger.warn({ err: { message: err.message }, redis: redactRedisUrl(url), role }, 'redis connection error');
  });
  redis.on('close', () => {
    if (!down && redis.status !== 'end') logger.warn({ redis: redactRedisUrl(url), role }, 'redis connection lost; reconnecting');
    down = true;
  });
  redis.on('ready', () => {
    if (down) logger.info({ redis: redactRedisUrl(url), role }, 'redis connection restored');
    down = false;
  });
  return redis;
}

/** Connects, or throws a clear error after `timeoutMs` (a wrong INTERTALK_REDIS fails at start). */
export async function connectRedis(redis: Redis, url: string, timeoutMs = 10_000): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    let lastErr: Error | null = null;
    const onError = (err: Error) => (lastErr = err);
    const timer = setTimeout(() => {
      cleanup();
      redis.disconnect();
      reject(new Error(`INTERTALK_REDIS: cannot reach ${redactRedisUrl(url)}${lastErr ? `: ${lastErr.message}` : ''}`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      redis.off('error', onError);
    };
    redis.on('ready', onReady);
    redis.on('error', onError);
    // connect() rejects on the first failure while ioredis keeps retrying; the timer decides.
    if (redis.status === 'wait') redis.connect().catch(() => undefined);
  });
}

/** QUIT, or drop the connection if Redis does not answer. */
export async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status === 'end') return;
  if (redis.status !== 'ready') {
    redis.disconnect();
    return;
  }
  await Promise.race([redis.quit().catch(() => undefined), new Promise((r) => setTimeout(r, 1000).unref())]);
  if ((redis.status as string) !== 'end') redis.disconnect();
}
