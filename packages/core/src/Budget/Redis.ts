/**
 * The budget ledger on Redis, so that every process shares one day's spend.
 * Reached by its own subpath (`@sluice/core/Budget/Redis`); `ioredis` is an
 * optional peer dependency.
 *
 * Per bucket: a sorted set of spend events (score: the time, from the Budget's
 * `Clock`) and a hash of open reservations. Reserve checks every charge and
 * writes them all in one Lua script, so it is all or nothing across processes;
 * settle and cancel are atomic too. Keys carry a prefix and expire 40 days after
 * their last write (longer than any calendar window). The scripts name keys that
 * they find in a reservation's index, so they need one Redis, not a Cluster.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { Redis as IORedis } from "ioredis"
import { BudgetLedger, BudgetLedgerError, type LedgerReservation } from "../Budget.js"

const keep = 40 * 24 * 3_600_000

const script = `
local prefix = KEYS[1]
local op = ARGV[1]
local arg = cjson.decode(ARGV[2])
local keep = tonumber(ARGV[3])
local function events(bucket) return prefix .. ':events:' .. bucket end
local function reserved(bucket) return prefix .. ':reserved:' .. bucket end
local function index(id) return prefix .. ':reservation:' .. id end
local function spent(bucket, since)
  local total = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', events(bucket), since, '+inf')) do
    total = total + tonumber(string.match(member, ':(%-?%d+)$'))
  end
  return total
end
local function held(bucket)
  local total = 0
  for _, value in ipairs(redis.call('HVALS', reserved(bucket))) do total = total + tonumber(value) end
  return total
end

if op == 'reserve' then
  for _, c in ipairs(arg.charges) do
    local s, r = spent(c.bucket, c.sinceMs), held(c.bucket)
    if s + r + c.micros > c.limitMicros then
      return cjson.encode({ tag = 'Exceeded', bucket = c.bucket, spent = s, reserved = r })
    end
  end
  local buckets = {}
  for _, c in ipairs(arg.charges) do
    redis.call('HSET', reserved(c.bucket), arg.id, c.micros)
    redis.call('PEXPIRE', reserved(c.bucket), keep)
    table.insert(buckets, c.bucket)
  end
  redis.call('SET', index(arg.id), cjson.encode(buckets), 'PX', keep)
  return cjson.encode({ tag = 'Reserved' })
elseif op == 'settle' or op == 'cancel' then
  local raw = redis.call('GET', index(arg.id))
  if raw then
    for _, bucket in ipairs(cjson.decode(raw)) do redis.call('HDEL', reserved(bucket), arg.id) end
    redis.call('DEL', index(arg.id))
  end
  if op == 'settle' then
    for i, s in ipairs(arg.spend) do
      redis.call('ZADD', events(s.bucket), arg.now, arg.now .. ':' .. arg.id .. ':' .. i .. ':' .. s.micros)
      redis.call('PEXPIRE', events(s.bucket), keep)
    end
  end
  return cjson.encode({ ok = true })
elseif op == 'usage' then
  return cjson.encode({ spent = spent(arg.bucket, arg.sinceMs), reserved = held(arg.bucket) })
end
return redis.error_reply('unknown operation ' .. tostring(op))
`

interface BudgetCommands {
  sluiceBudget(prefix: string, op: string, payload: string, keep: string): Promise<string>
}

/** Options of the Redis ledger. */
export interface Options {
  /** A connected client (not closed by the ledger), or a URL (closed with the scope). */
  readonly client?: IORedis | undefined
  readonly url?: string | undefined
  /** Prefix of every key. Default "sluice". */
  readonly prefix?: string | undefined
}

/** Builds the ledger. */
export const make = (options: Options): Effect.Effect<BudgetLedger["Type"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const client = options.client ?? (yield* Effect.acquireRelease(
      Effect.sync(() => new IORedis(options.url ?? "redis://127.0.0.1:6379", { maxRetriesPerRequest: 1 })),
      (redis) => Effect.sync(() => redis.disconnect())
    ))
    client.on("error", () => {
      // Failed operations report the error; nothing to do here.
    })
    client.defineCommand("sluiceBudget", { numberOfKeys: 1, lua: script })
    const redis = client as unknown as IORedis & BudgetCommands
    const prefix = `${options.prefix ?? "sluice"}:budget`

    const call = (op: string, payload: unknown): Effect.Effect<any, BudgetLedgerError> =>
      Effect.tryPromise({
        try: () => redis.sluiceBudget(prefix, op, JSON.stringify(payload), String(keep)),
        catch: (cause) => new BudgetLedgerError({ operation: op, cause })
      }).pipe(Effect.map((answer) => JSON.parse(answer) as unknown))

    return BudgetLedger.of({
      reserve: (id, charges) =>
        Effect.map(call("reserve", { id, charges }), (answer): LedgerReservation => {
          if (answer.tag === "Reserved") return { _tag: "Reserved" }
          const charge = charges.find((candidate) => candidate.bucket === answer.bucket)!
          return { _tag: "Exceeded", charge, spentMicros: answer.spent, reservedMicros: answer.reserved }
        }),
      settle: (id, spend, now) => Effect.asVoid(call("settle", { id, spend, now })),
      cancel: (id) => Effect.asVoid(call("cancel", { id })),
      usage: (bucket, sinceMs) => Effect.map(call("usage", { bucket, sinceMs }), (answer) => ({ spentMicros: answer.spent, reservedMicros: answer.reserved }))
    })
  })

/** The Redis ledger as a layer. */
export const layer = (options: Options): Layer.Layer<BudgetLedger> => Layer.scoped(BudgetLedger, make(options))
