export { MercuryNode, MERCURY_VERSION } from './node.js';
export type { NodeOptions } from './node.js';
export { SeqWaiter } from './seq-waiter.js';
