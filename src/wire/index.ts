/** The wire port: binary frames for point reads and single-key writes (format in src/api/wire.ts). */
export { WIRE_LIMITS, WIRE_LIMITS_TEST, validateWireLimits, type WireLimits } from './limits.js';
export { WireServer, type WireServerOptions } from './server.js';
export type { WireNode } from './wire-node.js';
