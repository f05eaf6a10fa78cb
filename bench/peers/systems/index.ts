/** The systems under test, by name. */
import type { SystemAdapter, SystemName } from '../system.js';
import { etcdAdapter } from './etcd.js';
import { mercuryAdapter } from './mercury.js';
import { redisAdapter } from './redis.js';

export const ADAPTERS: Readonly<Record<SystemName, SystemAdapter>> = Object.freeze({ mercury: mercuryAdapter, etcd: etcdAdapter, redis: redisAdapter });
export { connectMercury, openWatchConnection, untilApplied } from './mercury.js';
export { connectRedis, redisServerArgs } from './redis.js';
