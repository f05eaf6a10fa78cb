/**
 * A PromQL checker for the deploy tests, without Prometheus: it tokenizes an expression (strings, numbers, durations,
 * identifiers, operators) and reports what a typo would break: unbalanced ( ) [ ] { }, an unterminated string, a
 * range that is not a duration, an unknown function or aggregation, an aggregation modifier without its label list,
 * and the metric names the expression selects (identifiers that are not functions, keywords, label names or grouping
 * labels), for the caller to compare with a node's /metrics. It does not type-check (a range vector where an instant
 * vector is due passes), which only a real PromQL parser does.
 */

/** PromQL functions the rules and dashboards may use (Prometheus 2.x / 3.x). */
const FUNCTIONS = new Set([
  'abs', 'absent', 'absent_over_time', 'avg_over_time', 'ceil', 'changes', 'clamp', 'clamp_max', 'clamp_min', 'count_over_time',
  'delta', 'deriv', 'exp', 'floor', 'histogram_quantile', 'holt_winters', 'idelta', 'increase', 'irate', 'label_join',
  'label_replace', 'last_over_time', 'ln', 'log2', 'log10', 'max_over_time', 'min_over_time', 'predict_linear',
  'present_over_time', 'quantile_over_time', 'rate', 'resets', 'round', 'scalar', 'sort', 'sort_desc', 'sqrt',
  'stddev_over_time', 'sum_over_time', 'time', 'timestamp', 'vector',
]);
const AGGREGATIONS = new Set(['sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile']);
const GROUPING = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'atan2', 'inf', 'nan']);
/** Metrics Prometheus makes itself for every scrape target. */
export const SYNTHETIC_METRICS: ReadonlySet<string> = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped']);

type Token = { kind: 'ident' | 'string' | 'number' | 'duration' | 'punct' | 'op'; text: string };

function tokenize(expr: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < expr.length) {
    const c = expr[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '"' || c === "'" || c === '`') {
      let j = i + 1;
      while (j < expr.length && expr[j] !== c) j += expr[j] === '\\' && c !== '`' ? 2 : 1;
      if (j >= expr.length) throw new Error(`unterminated string at ${i}`);
      tokens.push({ kind: 'string', text: expr.slice(i, j + 1) });
      i = j + 1;
    } else if (/[0-9.]/.test(c)) {
      const duration = /^(\d+(ms|s|m|h|d|w|y))+/.exec(expr.slice(i));
      const number = /^(\d*\.?\d+(e[+-]?\d+)?)/i.exec(expr.slice(i));
      const text = duration?.[0] ?? number?.[0];
      if (text === undefined) throw new Error(`bad number at ${i}`);
      tokens.push({ kind: duration === null ? 'number' : 'duration', text });
      i += text.length;
    } else if (/[A-Za-z_:]/.test(c)) {
      const match = /^[A-Za-z_:][A-Za-z0-9_:]*/.exec(expr.slice(i))!;
      tokens.push({ kind: 'ident', text: match[0] });
      i += match[0].length;
    } else if ('()[]{},'.includes(c)) {
      tokens.push({ kind: 'punct', text: c });
      i++;
    } else {
      const match = /^(==|!=|>=|<=|=~|!~|[-+*/%^<>=])/.exec(expr.slice(i));
      if (match === null) throw new Error(`unexpected character "${c}" at ${i}`);
      tokens.push({ kind: 'op', text: match[0] });
      i += match[0].length;
    }
  }
  return tokens;
}

/** Checks `expr`; answers the metric names it selects. Throws an Error naming the first problem. */
export function checkPromql(expr: string): string[] {
  // Grafana's variables: $__rate_interval is a duration, other variables appear inside strings only.
  const tokens = tokenize(expr.replace(/\$__(rate_)?interval/g, '5m'));
  const closing: Record<string, string> = { '(': ')', '[': ']', '{': '}' };
  const stack: string[] = [];
  const metrics: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    const next = tokens[i + 1];
    const inBraces = stack.includes('}');
    if (token.kind === 'punct') {
      if (token.text in closing) stack.push(closing[token.text]!);
      else if (token.text !== ',' && stack.pop() !== token.text) throw new Error(`unbalanced "${token.text}" in ${expr}`);
      if (token.text === '[') {
        if (next?.kind !== 'duration' || tokens[i + 2]?.text !== ']') throw new Error(`a range must be [DURATION], in ${expr}`);
      }
      continue;
    }
    if (token.kind !== 'ident') continue;
    if (inBraces) {
      // A label matcher: name, operator, string.
      if (next?.kind !== 'op' || !['=', '!=', '=~', '!~'].includes(next.text) || tokens[i + 2]?.kind !== 'string')
        throw new Error(`label matcher ${token.text} needs = != =~ or !~ and a string, in ${expr}`);
      i += 2;
      continue;
    }
    if (GROUPING.has(token.text)) {
      if (next?.text !== '(') {
        if (token.text === 'group_left' || token.text === 'group_right') continue;
        throw new Error(`${token.text} needs a label list, in ${expr}`);
      }
      const end = tokens.findIndex((t, j) => j > i && t.text === ')');
      if (end === -1 || tokens.slice(i + 2, end).some((t) => t.kind !== 'ident' && t.text !== ',')) throw new Error(`bad label list after ${token.text}, in ${expr}`);
      i = end;
      continue;
    }
    if (KEYWORDS.has(token.text.toLowerCase())) continue;
    if (next?.text === '(' || (AGGREGATIONS.has(token.text) && next !== undefined && GROUPING.has(next.text))) {
      if (!FUNCTIONS.has(token.text) && !AGGREGATIONS.has(token.text)) throw new Error(`unknown function ${token.text}, in ${expr}`);
      continue;
    }
    metrics.push(token.text);
  }
  if (stack.length > 0) throw new Error(`unclosed "${stack.join('')}" in ${expr}`);
  return metrics;
}

/** The metric names a Prometheus text exposition declares (histograms with their _bucket, _sum and _count series). */
export function exposedMetrics(text: string): Set<string> {
  const names = new Set<string>();
  for (const match of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = match as unknown as [string, string, string];
    names.add(name);
    if (type === 'histogram' || type === 'summary') for (const suffix of ['_bucket', '_sum', '_count']) names.add(name + suffix);
  }
  return names;
}
