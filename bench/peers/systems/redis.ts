/**
 * Redis under test: one server on loopback with the AOF on and fsynced before every reply (`appendonly yes`,
 * `appendfsync always`), RDB snapshots off. One `ioredis` connection per client, without auto-pipelining, so that a
 * client has one request in flight as on the other systems.
 */
import { Redis } from 'ioredis';
import { freePort } from '../../support/free-port.js';
import type { ProcessGroup } from '../processes.js';
import type { KvClient, RunningSystem, SystemAdapter } from '../system.js';
import { binaryVersion, packageVersion } from './versions.js';

/** The arguments that give Redis durability comparable to the others: the AOF fsynced before each reply. */
export function redisServerArgs(port: number, dataDir: string, extra: readonly string[] = []): string[] {
  return [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dataDir,
    '--appendonly', 'yes',
    '--appendfsync', 'always',
    '--save', '',
    '--protected-mode', 'no',
    '--daemonize', 'no',
    ...extra,
  ];
}

export async function connectRedis(port: number): Promise<Redis> {
  const redis = new Redis({ host: '127.0.0.1', port, lazyConnect: true, enableAutoPipelining: false, maxRetriesPerRequest: 1 });
  await redis.connect();
  return redis;
}

export const redisAdapter: SystemAdapter = {
  name: 'redis',
  title: 'Redis',
  requires: [
    { binary: 'redis-server', debianPackage: 'redis-server' },
    { binary: 'redis-cli', debianPackage: 'redis-tools' },
  ],
  settings: '`appendonly yes`, `appendfsync always` (AOF fsync before each reply), no RDB snapshots',
  clientDescription: '`ioredis`, one connection per client, no auto-pipelining; batches as MULTI/EXEC',
  version: () => Promise.resolve(`Redis ${binaryVersion('redis-server', /v=(\S+)/)} (client ioredis ${packageVersion('ioredis')})`),
  async start(group: ProcessGroup): Promise<RunningSystem> {
    const dataDir = group.tempDir('redis');
    const port = await freePort();
    const child = await group.start({ name: 'redis', command: 'redis-server', args: redisServerArgs(port, dataDir), ready: /Ready to accept connections/ });
    return {
      name: 'redis',
      pid: child.pid,
      dataDir,
      async connect(): Promise<KvClient> {
        const redis = await connectRedis(port);
        return {
          async put(key, value) {
            await redis.set(key, value);
          },
          async get(key) {
            return (await redis.getBuffer(key)) ?? undefined;
          },
          async putBatch(entries) {
            const multi = redis.multi();
            for (const [key, value] of entries) multi.set(key, value);
            const results = await multi.exec();
            const failed = results?.find(([error]) => error !== null);
            if (results === null || failed !== undefined) throw new Error(`redis: MULTI/EXEC failed: ${String(failed?.[0] ?? 'aborted')}`);
          },
          async close() {
            await redis.quit();
          },
        };
      },
      stop: () => child.stop(),
    };
  },
};
