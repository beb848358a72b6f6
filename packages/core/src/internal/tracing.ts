/**
 * Spans on the hot path, made only when someone can read them. Effect's own
 * tracer (the default service when no tracer was installed) keeps its spans
 * in memory and exports nothing, yet `Effect.withSpan` costs about 36 fiber
 * steps per call (a span, a parent in the context, its end on exit): more
 * than a limiter grant. {@link withSpan} asks the calling fiber which tracer
 * it has and, for that default one or with tracing disabled, runs the effect
 * as it is; under any other tracer (OpenTelemetry's, a test's) it is
 * `Effect.withSpan`, unchanged.
 */
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Tracer from "effect/Tracer"

/** Effect's built-in tracer: the one every fiber has until a layer or `Effect.withTracer` installs another. */
const nativeTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/** Whether a fiber's spans would reach a tracer of someone's choosing. */
const traced = (fiber: {
  readonly currentDefaultServices: Context.Context<DefaultServices.DefaultServices>
  readonly getFiberRef: <A>(ref: FiberRef.FiberRef<A>) => A
}): boolean =>
  Context.get(fiber.currentDefaultServices, Tracer.Tracer) !== nativeTracer &&
  fiber.getFiberRef(FiberRef.currentTracerEnabled)

/**
 * `Effect.withSpan(self, name, options)` when the fiber has a tracer other
 * than Effect's built-in one (and tracing is enabled); else `self` alone.
 */
export const withSpan = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  name: string,
  options: Tracer.SpanOptions
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime<A, E, R>((fiber) => traced(fiber) ? Effect.withSpan(self, name, options) : self)
