export { GroupCommitter } from './group-commit.js';
export { COMMIT_LIMITS } from './limits.js';
export type { CommitLimits } from './limits.js';
export type { CommittedListener, GroupCommitOptions } from './group-commit.js';
export { validateKey, validateRequest, validateValue } from './requests.js';
export type { WriteRequest, WriteResult } from './requests.js';
