export { createApiHandler } from './api.js';
export { BodyBudget } from './body-budget.js';
export type { NodeApi } from './api.js';
export { HTTP_LIMITS, clientCertificateRefusal, createHttpServer, pipelinedAhead } from './http-server.js';
export type { HttpLimits, HttpSecurity } from './http-server.js';
export { OPEN_REQUEST_POLICY, requestRefusal } from './request-policy.js';
export type { RequestPolicy } from './request-policy.js';
export type { WriteCaller } from './node-api.js';
export { compareFailed, deleteRequest, putRequest, requireKeyWrite } from './kv-ops.js';
