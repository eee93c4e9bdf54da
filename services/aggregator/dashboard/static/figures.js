// Figures of a time range, kept current from the live stream. Pure: no DOM, no network.
//
// The query API returns, for a range, an overview (totals), totals per variant, and a series of
// points. In live mode the page asks for one point per minute, which is exactly what the SSE
// stream sends: every `metrics` event carries the full figures of the minutes that changed. A
// minute replaces the page's copy, and every total moves by (new - old). That is exact for every
// figure that is a sum or a ratio of sums: requests, errors, tokens, score sums and pass counts
// (average x samples, pass rate x samples: a whole number), so the cards stay
// equal to what the API would answer for the same range. Percentiles over a whole range are not
// sums: they stay as loaded, and `percentilesStale` tells the page to say so.

export const MINUTE = 60_000;

function emptyTokens() {
  return { calls: 0, prompt: 0, completion: 0, total: 0, cost: 0, priced: false };
}

export function emptyAcc() {
  return {
    requests: 0, responses: 0, errors: 0, cancelled: 0, latencySum: 0,
    tokens: emptyTokens(), models: {}, quality: {},
    feedback: { count: 0, rated: 0, ratingSum: 0, comments: 0 },
  };
}

function addTokens(into, tokens, sign) {
  if (!tokens) return;
  into.calls += sign * (tokens.calls || 0);
  into.prompt += sign * (tokens.prompt || 0);
  into.completion += sign * (tokens.completion || 0);
  into.total += sign * (tokens.total || 0);
  if (tokens.cost != null) {
    into.cost += sign * tokens.cost;
    into.priced = true;
  }
}

// Adds the API figures `f` (an overview, a variant's totals or a series point) times `sign`.
export function addFigures(acc, f, sign = 1) {
  if (!f) return acc;
  acc.requests += sign * (f.requests || 0);
  acc.responses += sign * (f.responses || 0);
  acc.errors += sign * (f.errors || 0);
  acc.cancelled += sign * (f.cancelled || 0);
  acc.latencySum += sign * (f.latency_ms && f.latency_ms.mean != null ? f.latency_ms.mean * (f.responses || 0) : 0);
  addTokens(acc.tokens, f.tokens, sign);
  for (const [model, tokens] of Object.entries(f.by_model || {})) {
    acc.models[model] = acc.models[model] || emptyTokens();
    addTokens(acc.models[model], tokens, sign);
  }
  for (const [metric, q] of Object.entries(f.quality || {})) {
    const into = (acc.quality[metric] = acc.quality[metric] || { samples: 0, sum: 0, passed: 0 });
    const samples = q.samples || 0;
    into.samples += sign * samples;
    if (samples) {
      into.sum += sign * q.average * samples; // not rounded: a 0-1 or labels scale's scores are not whole
      into.passed += sign * Math.round(q.pass_rate * samples);
    }
  }
  if (f.feedback) {
    acc.feedback.count += sign * (f.feedback.count || 0);
    acc.feedback.rated += sign * (f.feedback.rated || 0);
    acc.feedback.ratingSum += sign * Math.round((f.feedback.average_rating || 0) * (f.feedback.rated || 0));
    acc.feedback.comments += sign * (f.feedback.comments || 0);
  }
  return acc;
}

export function accOf(f) {
  return addFigures(emptyAcc(), f);
}

const ratio = (part, whole) => (whole ? part / whole : null);

// The figures a view shows, from sums.
export function view(acc) {
  const quality = {};
  for (const [metric, q] of Object.entries(acc.quality)) {
    quality[metric] = { samples: q.samples, average: ratio(q.sum, q.samples), pass_rate: ratio(q.passed, q.samples) };
  }
  return {
    requests: acc.requests,
    responses: acc.responses,
    errors: acc.errors,
    error_rate: ratio(acc.errors, acc.responses),
    latency_mean: ratio(acc.latencySum, acc.responses),
    tokens: { ...acc.tokens, cost: acc.tokens.priced ? acc.tokens.cost : null },
    models: acc.models,
    quality,
    feedback: { ...acc.feedback, average: ratio(acc.feedback.ratingSum, acc.feedback.rated) },
  };
}

function percentiles(f) {
  return { latency: f ? f.latency_ms : null, ttft: f ? f.time_to_first_token_ms : null };
}

// One range's figures: loaded once from /metrics, then moved by the stream's minutes.
export class RangeModel {
  constructor(metrics, { live }) {
    this.live = live;
    this.from = Date.parse(metrics.from);
    this.to = Date.parse(metrics.to);
    this.length = this.to - this.from;
    this.step = metrics.step_seconds * 1000;
    if (live && this.step !== MINUTE) throw new Error("a live range needs one point per minute");
    this.points = new Map();
    for (const point of metrics.series) this.points.set(Date.parse(point.start), point);
    this.total = accOf(metrics.overview);
    this.variants = new Map(Object.entries(metrics.by_variant).map(([v, f]) => [v, accOf(f)]));
    this.percentiles = percentiles(metrics.overview);
    this.variantPercentiles = new Map(Object.entries(metrics.by_variant).map(([v, f]) => [v, percentiles(f)]));
    this.percentilesStale = false;
    this.arrived = 0; // requests the stream added since the load (for "N new requests")
    this.loadedAt = Date.now();
    this.newestMinute = Math.max(-Infinity, ...[...this.points.entries()].filter(([, p]) => p.requests).map(([t]) => t));
  }

  variantNames() {
    return [...this.variants.keys()].sort();
  }

  _move(point, sign) {
    addFigures(this.total, point, sign);
    for (const [variant, figures] of Object.entries(point.by_variant || {})) {
      if (!this.variants.has(variant)) this.variants.set(variant, emptyAcc());
      addFigures(this.variants.get(variant), figures, sign);
    }
  }

  // Replace one minute with the stream's copy. Returns "ignored", "changed" or "new-minute"
  // (a minute with requests later than any seen: monitor windows may have closed since).
  applyMinute(point) {
    if (!this.live) return "ignored";
    const t = Date.parse(point.start);
    if (t < this.from) return "ignored"; // older than the range (a late event far back)
    if (t >= this.to) this.slideTo(t + MINUTE);
    const old = this.points.get(t);
    if (old) this._move(old, -1);
    this._move(point, 1);
    this.points.set(t, point);
    if ((old ? old.responses : 0) !== point.responses) this.percentilesStale = true;
    this.arrived += Math.max(0, point.requests - (old ? old.requests : 0));
    if (point.requests && t > this.newestMinute) {
      this.newestMinute = t;
      return "new-minute";
    }
    return "changed";
  }

  // Move the end of a live range to `to` (a minute boundary): minutes falling out of the range
  // leave every total; minutes entering it start empty.
  slideTo(to) {
    if (!this.live || to <= this.to) return;
    const from = to - this.length;
    for (const [t, point] of this.points) {
      if (t < from) {
        this._move(point, -1);
        if (point.responses) this.percentilesStale = true;
        this.points.delete(t);
      }
    }
    this.from = from;
    this.to = to;
  }

  // The points of the range in order, one per step (missing ones as null).
  steps() {
    const out = [];
    for (let t = this.from; t < this.to; t += this.step) out.push([t, this.points.get(t) || null]);
    return out;
  }

  // Points merged into buckets of `bucket` ms (a multiple of the step), summed exactly.
  buckets(bucket, pick = (p) => p) {
    const out = [];
    for (let start = this.from; start < this.to; start += bucket) {
      const acc = emptyAcc();
      let any = false;
      for (let t = start; t < Math.min(start + bucket, this.to); t += this.step) {
        const point = this.points.get(t);
        const figures = point ? pick(point) : null;
        if (figures) {
          addFigures(acc, figures);
          any = true;
        }
      }
      out.push([start, any ? view(acc) : null]);
    }
    return out;
  }
}

// A bucket size that gives at most about `target` buckets, a whole number of steps.
export function bucketFor(length, step, target = 120) {
  const steps = Math.ceil(length / step / target);
  return Math.max(1, steps) * step;
}
