// The part of js-yaml (4.x, a devDependency without bundled types) that the deploy tests use.
declare module 'js-yaml' {
  /** Parses one YAML document (the default schema: YAML 1.2 core plus timestamps and merge keys). Throws YAMLException. */
  export function load(text: string, options?: { filename?: string }): unknown;
  /** Parses every document of a multi-document stream (`---` separated). */
  export function loadAll(text: string, iterator?: null, options?: { filename?: string }): unknown[];
}
