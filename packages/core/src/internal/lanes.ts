/**
 * The waiting lanes of one key: a FIFO per priority class, with lazy removal.
 *
 * Only the front of each lane can be the next one served (within a class the
 * oldest waiter is also the most promoted), so choosing the head is O(classes).
 * Leaving from the middle (interruption, shedding) marks the waiter and the
 * front skips it later; lanes compact themselves when mostly dead.
 */
import * as Duration from "effect/Duration"
import type * as Cost from "../Cost.js"
import * as Priority from "../Priority.js"

/** `waiting` until the driver grants it or it leaves. */
export type WaiterState = "waiting" | "granted" | "cancelled" | "failed"

export interface Waiter {
  readonly seq: number
  readonly priority: Priority.Class
  readonly arrivedAt: number
  readonly amounts: Cost.Amounts
  state: WaiterState
}

class Lane<W extends Waiter> {
  private items: Array<W> = []
  private start = 0
  live = 0

  push(waiter: W): void {
    this.items.push(waiter)
    this.live++
  }

  front(): W | undefined {
    while (this.start < this.items.length && this.items[this.start]!.state !== "waiting") this.start++
    if (this.start > 1024 && this.start * 2 > this.items.length) {
      this.items = this.items.slice(this.start)
      this.start = 0
    }
    return this.items[this.start]
  }

  /** The newest live waiter: the first to shed within a class. */
  back(): W | undefined {
    for (let i = this.items.length - 1; i >= this.start; i--) {
      const waiter = this.items[i]!
      if (waiter.state === "waiting") return waiter
    }
    return undefined
  }

  *waiting(): Generator<W> {
    for (let i = this.start; i < this.items.length; i++) {
      const waiter = this.items[i]!
      if (waiter.state === "waiting") yield waiter
    }
  }
}

/** A running sum of the amounts of the waiters in one lane. */
type Sum = { -readonly [D in keyof Cost.Amounts]: number }

const emptySum = (): Sum => ({ requests: 0, inputTokens: 0, outputTokens: 0, tokens: 0 })

export class Lanes<W extends Waiter> {
  private readonly lanes: Record<Priority.Class, Lane<W>> = {
    batch: new Lane(),
    normal: new Lane(),
    interactive: new Lane()
  }
  private readonly sums: Record<Priority.Class, Sum> = {
    batch: emptySum(),
    normal: emptySum(),
    interactive: emptySum()
  }
  private seq = 0

  nextSeq(): number {
    return this.seq++
  }

  size(priority: Priority.Class): number {
    return this.lanes[priority].live
  }

  total(): number {
    return this.lanes.batch.live + this.lanes.normal.live + this.lanes.interactive.live
  }

  push(waiter: W): void {
    this.lanes[waiter.priority].push(waiter)
    const sum = this.sums[waiter.priority]
    sum.requests += waiter.amounts.requests
    sum.inputTokens += waiter.amounts.inputTokens
    sum.outputTokens += waiter.amounts.outputTokens
    sum.tokens += waiter.amounts.tokens
  }

  /** What the live waiters of a class would take, together. */
  queued(priority: Priority.Class): Cost.Amounts {
    const lane = this.lanes[priority]
    // Float sums drift; an empty lane owes nothing.
    if (lane.live === 0) Object.assign(this.sums[priority], emptySum())
    return { ...this.sums[priority] }
  }

  /** Moves a waiting waiter out of its lane; false when it had left already. */
  leave(waiter: Waiter, state: Exclude<WaiterState, "waiting">): boolean {
    if (waiter.state !== "waiting") return false
    waiter.state = state
    this.lanes[waiter.priority].live--
    const sum = this.sums[waiter.priority]
    sum.requests -= waiter.amounts.requests
    sum.inputTokens -= waiter.amounts.inputTokens
    sum.outputTokens -= waiter.amounts.outputTokens
    sum.tokens -= waiter.amounts.tokens
    return true
  }

  /**
   * The waiter to serve next: the highest effective rank among the lanes'
   * fronts, the earliest arrival on a tie.
   */
  head(now: number, promoteAfter: Duration.Duration): { readonly waiter: W; readonly rank: number } | undefined {
    let best: { waiter: W; rank: number } | undefined
    for (const priority of Priority.classes) {
      const waiter = this.lanes[priority].front()
      if (waiter === undefined) continue
      const rank = Priority.effectiveRank(priority, Duration.millis(now - waiter.arrivedAt), promoteAfter)
      if (best === undefined || rank > best.rank || (rank === best.rank && waiter.seq < best.waiter.seq)) {
        best = { waiter, rank }
      }
    }
    return best
  }

  /** The next instant at which some lane front gets promoted, or Infinity. */
  nextPromotion(now: number, promoteAfter: Duration.Duration): number {
    const step = Duration.toMillis(promoteAfter)
    if (!(step > 0) || !Number.isFinite(step)) return Number.POSITIVE_INFINITY
    let next = Number.POSITIVE_INFINITY
    for (const priority of Priority.classes) {
      if (Priority.rank(priority) === Priority.topRank) continue
      const waiter = this.lanes[priority].front()
      if (waiter === undefined) continue
      const age = now - waiter.arrivedAt
      const promotions = Math.floor(age / step)
      if (Priority.rank(priority) + promotions >= Priority.topRank) continue
      next = Math.min(next, waiter.arrivedAt + (promotions + 1) * step)
    }
    return next
  }

  /** The newest waiter of the lowest non-empty class: the first to shed when the queue is full. */
  lowest(): W | undefined {
    for (const priority of Priority.classes) {
      const waiter = this.lanes[priority].back()
      if (waiter !== undefined) return waiter
    }
    return undefined
  }

  newest(priority: Priority.Class): W | undefined {
    return this.lanes[priority].back()
  }

  *all(): Generator<W> {
    for (const priority of Priority.classes) yield* this.lanes[priority].waiting()
  }
}
