/**
 * The budget ledger on Redis, so that every process shares one day's spend.
 * Reached by its own subpath (`@sluice/core/Budget/Redis`); `ioredis` is an
 * optional peer dependency.
 *
 * Every operation is one Lua script over a bounded number of keys, whatever was
 * spent before (200,000 prior calls in the month cost one reserve no more than
 * the first: `bench/budget-ledger.ts`):
 * - spend: one integer counter per calendar window (`spent:<bucket>`), or per
 *   slice of a rolling window (`spent:<bucket>#<slice>`, 61 summed by MGET). A
 *   counter's expiry is set once, when it is created: its window's end (a slice's
 *   end plus the window) plus a margin.
 * - open reservations: a counter per bucket (`held:<bucket>`), a sorted set of
 *   the bucket's holds by expiry (`holds:<bucket>`, members `id|micros`) and an
 *   entry per reservation (`reservation:<id>`, expiring with it). An expired hold
 *   is given back by the next reserve or usage of its bucket (at most 64 a call).
 *
 * Time is the Budget's `Clock`, passed in; Redis's own clock only expires keys
 * after their use is over. The scripts build key names from their arguments, so
 * they need one Redis, not a Cluster.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { Redis as IORedis } from "ioredis"
import { BudgetLedger, BudgetLedgerError, counterMarginMs, countersAt, type LedgerReservation } from "../Budget.js"

// Numbers travel as decimal strings: Redis's Lua turns a number argument of redis.call
// into "%.14g" text, which INCRBY refuses past 14 digits.
const script = `
local prefix = KEYS[1]
local op = ARGV[1]
local arg = cjson.decode(ARGV[2])
local function spentKey(name) return prefix .. ':spent:' .. name end
local function heldKey(bucket) return prefix .. ':held:' .. bucket end
local function holdsKey(bucket) return prefix .. ':holds:' .. bucket end
local function entryKey(id) return prefix .. ':reservation:' .. id end
local function spent(names)
  local keys = {}
  for i, name in ipairs(names) do keys[i] = spentKey(name) end
  local total = 0
  for _, value in ipairs(redis.call('MGET', unpack(keys))) do
    if value then total = total + tonumber(value) end
  end
  return total
end
local function held(bucket) return tonumber(redis.call('GET', heldKey(bucket)) or '0') end
local function reclaim(bucket, now)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', holdsKey(bucket), '-inf', now, 'LIMIT', 0, 64)) do
    redis.call('ZREM', holdsKey(bucket), member)
    redis.call('DECRBY', heldKey(bucket), string.match(member, '|(%d+)$'))
  end
end
local function release(id)
  local raw = redis.call('GET', entryKey(id))
  if not raw then return end
  for _, c in ipairs(cjson.decode(raw)) do
    if redis.call('ZREM', holdsKey(c.bucket), id .. '|' .. c.micros) == 1 then
      redis.call('DECRBY', heldKey(c.bucket), c.micros)
    end
  end
  redis.call('DEL', entryKey(id))
end
local function keepAtLeast(key, ms)
  if redis.call('PTTL', key) < tonumber(ms) then redis.call('PEXPIRE', key, ms) end
end

if op == 'reserve' then
  for i, c in ipairs(arg.charges) do
    reclaim(c.bucket, arg.now)
    local s, r = spent(c.summed), held(c.bucket)
    if s + r + tonumber(c.micros) > tonumber(c.limitMicros) then return { 'Exceeded', i, s, r } end
  end
  release(arg.id)
  local entry = {}
  for i, c in ipairs(arg.charges) do
    redis.call('INCRBY', heldKey(c.bucket), c.micros)
    redis.call('ZADD', holdsKey(c.bucket), arg.expiresAt, arg.id .. '|' .. c.micros)
    keepAtLeast(heldKey(c.bucket), c.heldMs)
    keepAtLeast(holdsKey(c.bucket), c.heldMs)
    entry[i] = { bucket = c.bucket, micros = c.micros }
  end
  redis.call('SET', entryKey(arg.id), cjson.encode(entry), 'PX', arg.entryMs)
  return { 'Reserved' }
elseif op == 'settle' then
  release(arg.id)
  local after = {}
  for i, s in ipairs(arg.spend) do
    redis.call('SET', spentKey(s.current), '0', 'NX', 'PX', s.keepMs)
    redis.call('INCRBY', spentKey(s.current), s.micros)
    after[i] = spent(s.summed)
  end
  return after
elseif op == 'cancel' then
  release(arg.id)
  return 1
elseif op == 'usage' then
  reclaim(arg.bucket, arg.now)
  return { spent(arg.summed), held(arg.bucket) }
end
return redis.error_reply('unknown operation ' .. tostring(op))
`

interface BudgetCommands {
  sluiceBudgetLedger(prefix: string, op: string, payload: string): Promise<unknown>
}

/**
 * Options of the Redis ledger.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * A connected client (not closed by the ledger), or a URL (closed with the
   * scope). A client given here should time its commands out (`commandTimeout`):
   * a reserve waits for its answer without interruption.
   */
  readonly client?: IORedis | undefined
  readonly url?: string | undefined
  /** Prefix of every key. Default "sluice". */
  readonly prefix?: string | undefined
  /** How long one command of a client created from `url` may take. Default 2 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

const text = (n: number) => String(Math.round(n))

/**
 * Builds the ledger.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<BudgetLedger["Type"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const client = options.client ?? (yield* Effect.acquireRelease(
      Effect.sync(() =>
        new IORedis(options.url ?? "redis://127.0.0.1:6379", {
          maxRetriesPerRequest: 1,
          commandTimeout: Math.max(
            1,
            Math.round(Duration.toMillis(Duration.decode(options.timeout ?? Duration.seconds(2))))
          )
        })
      ),
      (redis) => Effect.sync(() => redis.disconnect())
    ))
    client.on("error", () => {
      // Failed operations report the error; nothing to do here.
    })
    client.defineCommand("sluiceBudgetLedger", { numberOfKeys: 1, lua: script })
    const redis = client as unknown as IORedis & BudgetCommands
    const prefix = `${options.prefix ?? "sluice"}:budget`

    const call = (op: string, payload: unknown): Effect.Effect<ReadonlyArray<unknown>, BudgetLedgerError> =>
      Effect.tryPromise({
        try: () => redis.sluiceBudgetLedger(prefix, op, JSON.stringify(payload)),
        catch: (cause) => new BudgetLedgerError({ operation: op, cause })
      }) as Effect.Effect<ReadonlyArray<unknown>, BudgetLedgerError>

    return BudgetLedger.of({
      reserve: (id, charges, now, expiresAt) =>
        Effect.map(
          call("reserve", {
            id,
            now: text(now),
            expiresAt: text(expiresAt),
            entryMs: text(Math.max(0, expiresAt - now) + counterMarginMs),
            charges: charges.map((charge) => {
              const { keepMs, summed } = countersAt(charge.bucket, charge.counting, now)
              return {
                bucket: charge.bucket,
                summed,
                micros: text(charge.micros),
                limitMicros: text(charge.limitMicros),
                heldMs: text(Math.max(keepMs, expiresAt - now + counterMarginMs))
              }
            })
          }),
          (answer): LedgerReservation =>
            answer[0] === "Reserved"
              ? { _tag: "Reserved" }
              : {
                _tag: "Exceeded",
                charge: charges[Number(answer[1]) - 1]!,
                spentMicros: Number(answer[2]),
                reservedMicros: Number(answer[3])
              }
        ),
      settle: (id, spend, now) =>
        Effect.map(
          call("settle", {
            id,
            spend: spend.map(({ bucket, counting, micros }) => {
              const { current, keepMs, summed } = countersAt(bucket, counting, now)
              return { current, summed, keepMs: text(keepMs), micros: text(micros) }
            })
          }),
          (after) => after.map(Number)
        ),
      cancel: (id) => Effect.asVoid(call("cancel", { id })),
      usage: (bucket, counting, now) =>
        Effect.map(
          call("usage", { bucket, now: text(now), summed: countersAt(bucket, counting, now).summed }),
          (answer) => ({ spentMicros: Number(answer[0]), reservedMicros: Number(answer[1]) })
        )
    })
  })

/**
 * The Redis ledger as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<BudgetLedger> => Layer.scoped(BudgetLedger, make(options))
