// Lint and format, as Effect's own v3 repository does: ESLint's flat config with
// @effect/eslint-plugin's dprint rule doing the formatting (line width 120), so
// `pnpm lint` checks both and `pnpm lint:fix` rewrites the tree.
import * as effectEslint from "@effect/eslint-plugin"
import js from "@eslint/js"
import tseslint from "typescript-eslint"

export default [
  {
    ignores: ["**/dist/**", "**/node_modules/**", "**/*.md", "docs/**", "**/.sluice/**", "**/out/**"]
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  ...effectEslint.configs.dprint,
  {
    languageOptions: {
      parser: tseslint.parser,
      ecmaVersion: 2022,
      sourceType: "module"
    },
    rules: {
      "no-fallthrough": "off",
      "no-irregular-whitespace": "off",
      "object-shorthand": "error",
      "prefer-destructuring": "off",
      "no-unused-vars": "off",
      "require-yield": "off",
      "prefer-rest-params": "off",
      "prefer-spread": "off",
      "no-restricted-syntax": [
        "error",
        {
          selector: "CallExpression[callee.property.name='push'] > SpreadElement.arguments",
          message: "Do not use spread arguments in Array.push"
        }
      ],
      "@typescript-eslint/array-type": ["warn", { default: "generic", readonly: "generic" }],
      "@typescript-eslint/no-non-null-assertion": "off",
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-empty-object-type": "off",
      "@typescript-eslint/no-unsafe-function-type": "off",
      "@typescript-eslint/no-wrapper-object-types": "off",
      "@typescript-eslint/no-namespace": "off",
      "@typescript-eslint/ban-ts-comment": "off",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@effect/dprint": [
        "error",
        {
          config: {
            indentWidth: 2,
            lineWidth: 120,
            semiColons: "asi",
            quoteStyle: "alwaysDouble",
            trailingCommas: "never",
            operatorPosition: "maintain",
            "arrowFunction.useParentheses": "force"
          }
        }
      ]
    }
  },
  {
    // Plain JavaScript run by Node (the packaging smoke test).
    files: ["**/*.mjs"],
    languageOptions: {
      globals: { console: "readonly", process: "readonly", URL: "readonly" }
    }
  },
  // The rooms and their arrows: examples → simulator → providers → core, never back; the
  // errors module at the bottom of core imports only its leaf contracts.
  ...[
    ["packages/core/src/**/*", ["@sluice/providers", "@sluice/simulator", "@sluice/examples"]],
    ["packages/providers/src/**/*", ["@sluice/simulator", "@sluice/examples"]],
    ["packages/simulator/src/**/*", ["@sluice/examples"]]
  ].map(([files, higher]) => ({
    files: [files],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{
          group: higher.flatMap((name) => [name, `${name}/*`]),
          message: "A lower room imports a higher one"
        }]
      }]
    }
  })),
  {
    files: ["packages/core/src/SluiceError.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{
          group: ["./*", "../*", "!./Priority.js", "!./Quota.js", "!./RateLimitSnapshot.js"],
          message:
            "SluiceError is the bottom of core: it imports only the leaf contracts Priority, Quota and RateLimitSnapshot"
        }]
      }]
    }
  },
  {
    // Library code logs through Effect, never the console.
    files: ["packages/core/src/**/*", "packages/providers/src/**/*"],
    rules: {
      "no-console": "error"
    }
  }
]
