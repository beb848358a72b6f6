import { describe, expect, it } from "@effect/vitest"
import { TokenBucket } from "@sluice/core"
import { FastCheck as fc } from "effect"

describe("TokenBucket", () => {
  it("refills continuously and never above capacity", () => {
    const bucket = TokenBucket.make({ capacity: 100, ratePerMilli: 0.5, now: 0, level: 0 })
    expect(TokenBucket.levelAt(bucket, 10)).toBe(5)
    expect(TokenBucket.levelAt(bucket, 150)).toBe(75)
    expect(TokenBucket.levelAt(bucket, 1_000)).toBe(100)
  })

  it("a clock that goes back refills nothing", () => {
    const bucket = TokenBucket.make({ capacity: 100, ratePerMilli: 1, now: 50, level: 10 })
    expect(TokenBucket.levelAt(bucket, 20)).toBe(10)
    expect(TokenBucket.advance(bucket, 20)).toBe(bucket)
  })

  it("take may go into debt and the debt refills before anything fits", () => {
    const bucket = TokenBucket.take(TokenBucket.make({ capacity: 60, ratePerMilli: 1, now: 0 }), 90, 0)
    expect(bucket.level).toBe(-30)
    expect(TokenBucket.fitsAt(bucket, 10, 0)).toBe(40)
  })

  it("refund gives back up to capacity", () => {
    const bucket = TokenBucket.make({ capacity: 60, ratePerMilli: 1, now: 0, level: 50 })
    expect(TokenBucket.refund(bucket, 5, 0).level).toBe(55)
    expect(TokenBucket.refund(bucket, 500, 0).level).toBe(60)
    expect(TokenBucket.adjust(bucket, -5, 0).level).toBe(55)
    expect(TokenBucket.adjust(bucket, 5, 0).level).toBe(45)
  })

  it("fitsAt is exact at 2,000,000 tokens a minute", () => {
    const rate = 2_000_000 / 60_000
    const empty = TokenBucket.make({ capacity: 2_000_000, ratePerMilli: rate, now: 0, level: 0 })
    const at = TokenBucket.fitsAt(empty, 100_000, 0)
    expect(Math.ceil(at)).toBe(3_000)
    expect(TokenBucket.fits(empty, 100_000, 3_000)).toBe(true)
    expect(TokenBucket.fits(empty, 100_000, 2_999)).toBe(false)
    // a full minute refills the whole 2,000,000, not 60,000
    expect(TokenBucket.levelAt(empty, 60_000)).toBeCloseTo(2_000_000, 6)
  })

  it("a cost above capacity never fits", () => {
    const bucket = TokenBucket.make({ capacity: 10, ratePerMilli: 1, now: 0 })
    expect(TokenBucket.fitsAt(bucket, 11, 0)).toBe(Number.POSITIVE_INFINITY)
    expect(TokenBucket.fitsAt(bucket, 10, 0)).toBe(0)
  })

  it("headroom is kept unless the cost is too large to leave it", () => {
    const bucket = TokenBucket.make({ capacity: 100, ratePerMilli: 1, now: 0, level: 0 })
    expect(TokenBucket.reserveFor(bucket, 20, 0.1)).toBe(10)
    expect(TokenBucket.fitsAt(bucket, 20, 0, TokenBucket.reserveFor(bucket, 20, 0.1))).toBe(30)
    expect(TokenBucket.reserveFor(bucket, 95, 0.1)).toBe(5)
    expect(TokenBucket.reserveFor(bucket, 100, 0.1)).toBe(0)
  })

  it("clamp lowers to the provider's remaining and never raises", () => {
    const bucket = TokenBucket.make({ capacity: 100, ratePerMilli: 1, now: 0, level: 80 })
    expect(TokenBucket.clamp(bucket, 30, 0).level).toBe(30)
    expect(TokenBucket.clamp(bucket, 95, 0).level).toBe(80)
  })

  it("resize keeps the level, cut to the new capacity", () => {
    const bucket = TokenBucket.make({ capacity: 100, ratePerMilli: 1, now: 0, level: 80 })
    const smaller = TokenBucket.resize(bucket, 50, 0.5, 0)
    expect(smaller).toMatchObject({ capacity: 50, ratePerMilli: 0.5, level: 50 })
  })

  it.prop(
    "a bucket never admits more than capacity + rate × elapsed in any interval",
    {
      capacity: fc.integer({ min: 1, max: 10_000 }),
      ratePerMilli: fc.double({ min: 0.001, max: 50, noNaN: true }),
      arrivals: fc.array(
        fc.record({ gap: fc.integer({ min: 0, max: 2_000 }), amount: fc.integer({ min: 0, max: 10_000 }) }),
        { maxLength: 60 }
      )
    },
    ({ arrivals, capacity, ratePerMilli }) => {
      let bucket = TokenBucket.make({ capacity, ratePerMilli, now: 0 })
      let now = 0
      const grants: Array<{ at: number; amount: number }> = []
      for (const { amount, gap } of arrivals) {
        now += gap
        // the waiter sleeps until fitsAt (rounded up to the clock tick) and then takes
        const at = TokenBucket.fitsAt(bucket, amount, now)
        if (!Number.isFinite(at)) {
          expect(amount).toBeGreaterThan(capacity)
          continue
        }
        now = Math.max(now, Math.ceil(at))
        expect(TokenBucket.fits(bucket, amount, now)).toBe(true)
        bucket = TokenBucket.take(bucket, amount, now)
        grants.push({ at: now, amount })
      }
      for (let i = 0; i < grants.length; i++) {
        let total = 0
        for (let j = i; j < grants.length; j++) {
          total += grants[j]!.amount
          const allowed = capacity + ratePerMilli * (grants[j]!.at - grants[i]!.at)
          expect(total).toBeLessThanOrEqual(allowed * (1 + 1e-9) + 1e-6)
        }
      }
    }
  )
})
