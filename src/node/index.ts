export { MercuryNode, MERCURY_VERSION } from './node.js';
export type { NodeOptions } from './node.js';
export { SeqWaiter } from './seq-waiter.js';
export { NODE_LIMITS, NODE_LIMITS_TEST, validateNodeLimits, withLimits } from './limits.js';
export type { LogLimits, NodeLimits, NodeLimitsOverrides, StoreLimits } from './limits.js';
export { readiness } from './readiness.js';
export type { ReadinessInput } from './readiness.js';
