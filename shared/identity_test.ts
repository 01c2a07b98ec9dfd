import assert from "node:assert/strict";
import {
  IdentityError,
  normalizeAddress,
  normalizeDomain,
} from "./identity.ts";

Deno.test("identity: addresses are normalised to lowercase", () => {
  assert.equal(
    normalizeAddress("Alice.Smith@Example.ORG"),
    "alice.smith@example.org",
  );
  assert.equal(
    normalizeAddress(" bob_1-x@mail.example.org "),
    "bob_1-x@mail.example.org",
  );
});

Deno.test("identity: international domains are stored in punycode", () => {
  assert.equal(normalizeDomain("Příklad.cz"), "xn--pklad-zsa96e.cz");
  assert.equal(normalizeAddress("jan@příklad.cz"), "jan@xn--pklad-zsa96e.cz");
});

Deno.test("identity: every rule refuses with a message naming it", () => {
  const bad: [string, RegExp][] = [
    ["nobody", /local@domain/],
    ["a!b@example.org", /only a-z/],
    ["a#b@example.org", /only a-z/],
    ["a&b@example.org", /only a-z/],
    [".a@example.org", /start or end/],
    ["a.@example.org", /start or end/],
    ["a..b@example.org", /repeat/],
    ["@example.org", /1 to 64/],
    [`${"a".repeat(65)}@example.org`, /1 to 64/],
    ["a@localhost", /two labels/],
    ["a@-x.org", /label/],
    ["a@x_y.org", /label/],
    [`a@${"a".repeat(64)}.org`, /label/],
    [`a@${"abcdefgh.".repeat(32)}org`, /253/],
    ["a@1.2.3.4", /numeric/],
  ];
  for (const [input, rule] of bad) {
    assert.throws(() => normalizeAddress(input), (error: unknown) => {
      assert.ok(error instanceof IdentityError, input);
      assert.match(error.message, rule, input);
      return true;
    });
  }
});
