/**
 * `@sluice/providers`: provider layers (Anthropic SDK, OpenAI-compatible HTTP),
 * rate-limit header parsers and the provider simulator.
 *
 * Nothing is exported yet: the provider issue (#3) fills this package. It exists
 * now so that the workspace, its dependency arrows (examples -> providers ->
 * core) and its type check are in place from the start.
 */
export {}
